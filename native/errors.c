/*
 * Errors as tlsnet's JS side (src/errors.ts mapTLSError) expects them, spelt
 * the way node:tls spells them: OpenSSL reasons become codes "ERR_SSL_" + the
 * reason text upper-cased with spaces as underscores ("wrong version number"
 * -> ERR_SSL_WRONG_VERSION_NUMBER); system errors their errno name
 * (ECONNRESET); certificate verification results the X509_V_ERR_ name without
 * its prefix (CERT_HAS_EXPIRED). OpenSSL's error queue is emptied afterwards.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsnet.h"

static void copy(char* dst, size_t n, const char* src) {
  snprintf(dst, n, "%s", src == NULL ? "" : src);
}

void tlsnet_set_error(conn_t* c, const char* kind, const char* code, const char* text) {
  c->err_pending = 1;
  if (c->err == NULL) c->err = malloc(sizeof *c->err);
  if (c->err == NULL) return; /* tlsnet_error_of says ENOMEM */
  copy(c->err->kind, sizeof c->err->kind, kind);
  copy(c->err->code, sizeof c->err->code, code);
  copy(c->err->text, sizeof c->err->text, text);
}

/* The conn's system error (c->sys_errno), as node:net names it: ECONNRESET, EPIPE, ... */
void tlsnet_set_sys_error(conn_t* c) {
  tlsnet_set_error(c, "sys", uv_err_name(-c->sys_errno), strerror(c->sys_errno));
}

/* The recorded error; without one (no memory to record it), ENOMEM. */
const conn_err_t* tlsnet_error_of(const conn_t* c) {
  static const conn_err_t oom = {"sys", "ENOMEM", "out of memory recording an error"};
  return c->err != NULL ? c->err : &oom;
}

/* The first error on OpenSSL's queue as a node-style code and its reason text; clears the queue. */
void tlsnet_ssl_error_text(char* code, size_t code_len, char* text, size_t text_len) {
  unsigned long e = ERR_peek_error();
  const char* reason = e != 0 ? ERR_reason_error_string(e) : NULL;
  if (reason != NULL) {
    size_t i = 0;
    int w = snprintf(code, code_len, "ERR_SSL_");
    for (i = (size_t)w; *reason != '\0' && i + 1 < code_len; reason++, i++) {
      code[i] = *reason == ' ' ? '_' : (char)toupper((unsigned char)*reason);
    }
    code[i] = '\0';
    copy(text, text_len, ERR_reason_error_string(e));
  } else if (e != 0) {
    snprintf(code, code_len, "ERR_SSL_%lu", (unsigned long)ERR_GET_REASON(e));
    snprintf(text, text_len, "OpenSSL error %lx", e);
  } else {
    copy(code, code_len, "ERR_SSL_UNKNOWN");
    copy(text, text_len, "TLS failure without an OpenSSL error");
  }
  ERR_clear_error();
}

/*
 * Record why an SSL_* call failed. SSL_ERROR_SYSCALL with an errno is a system
 * error; with none (or ZERO_RETURN) the peer closed the connection.
 */
void tlsnet_take_error(conn_t* c, int ssl_err, int ret) {
  (void)ret;
  if (ssl_err == SSL_ERROR_SYSCALL && c->sys_errno != 0) {
    ERR_clear_error();
    tlsnet_set_sys_error(c);
    return;
  }
  if (ssl_err == SSL_ERROR_SSL || ERR_peek_error() != 0) {
    char code[sizeof ((conn_err_t*)NULL)->code];
    char text[sizeof ((conn_err_t*)NULL)->text];
    tlsnet_ssl_error_text(code, sizeof code, text, sizeof text);
    tlsnet_set_error(c, "ssl", code, text);
    return;
  }
  ERR_clear_error();
  tlsnet_set_error(c, "eof", "ECONNRESET", "the peer closed the connection");
}

#define X(name)           \
  case X509_V_ERR_##name: \
    return #name;

const char* tlsnet_x509_error_name(long code) {
  switch (code) {
    X(UNABLE_TO_GET_ISSUER_CERT)
    X(UNABLE_TO_GET_CRL)
    X(UNABLE_TO_DECRYPT_CERT_SIGNATURE)
    X(UNABLE_TO_DECRYPT_CRL_SIGNATURE)
    X(UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY)
    X(CERT_SIGNATURE_FAILURE)
    X(CRL_SIGNATURE_FAILURE)
    X(CERT_NOT_YET_VALID)
    X(CERT_HAS_EXPIRED)
    X(CRL_NOT_YET_VALID)
    X(CRL_HAS_EXPIRED)
    X(ERROR_IN_CERT_NOT_BEFORE_FIELD)
    X(ERROR_IN_CERT_NOT_AFTER_FIELD)
    X(ERROR_IN_CRL_LAST_UPDATE_FIELD)
    X(ERROR_IN_CRL_NEXT_UPDATE_FIELD)
    X(OUT_OF_MEM)
    X(DEPTH_ZERO_SELF_SIGNED_CERT)
    X(SELF_SIGNED_CERT_IN_CHAIN)
    X(UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
    X(UNABLE_TO_VERIFY_LEAF_SIGNATURE)
    X(CERT_CHAIN_TOO_LONG)
    X(CERT_REVOKED)
    X(INVALID_CA)
    X(PATH_LENGTH_EXCEEDED)
    X(INVALID_PURPOSE)
    X(CERT_UNTRUSTED)
    X(CERT_REJECTED)
    X(HOSTNAME_MISMATCH)
#ifdef X509_V_ERR_EE_KEY_TOO_SMALL
    X(EE_KEY_TOO_SMALL)
    X(CA_KEY_TOO_SMALL)
    X(CA_MD_TOO_WEAK)
#endif
    default:
      return "UNSPECIFIED";
  }
}
#undef X
