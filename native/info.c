/*
 * What a finished handshake negotiated, for the JS side's ConnectionState and
 * its verification: version, IANA cipher name, ALPN, SNI, resumption, the
 * verify result and the peer's chain (DER, leaf first), and the name check.
 */
#include <string.h>

#include "tlsnet.h"

static void set_str(napi_env env, napi_value o, const char* key, const char* s, size_t n) {
  napi_value v;
  if (s == NULL) napi_get_null(env, &v);
  else napi_create_string_utf8(env, s, n, &v);
  napi_set_named_property(env, o, key, v);
}

static napi_value der(napi_env env, X509* x) {
  int n = i2d_X509(x, NULL);
  napi_value v;
  void* p;
  if (n <= 0 || napi_create_buffer(env, (size_t)n, &p, &v) != napi_ok) {
    napi_get_null(env, &v);
    return v;
  }
  unsigned char* q = p;
  i2d_X509(x, &q);
  return v;
}

napi_value tlsnet_conn_info(napi_env env, conn_t* c) {
  SSL* ssl = c->ssl;
  napi_value o, v;
  napi_create_object(env, &o);
  set_str(env, o, "version", SSL_get_version(ssl), NAPI_AUTO_LENGTH);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  set_str(env, o, "cipher", cipher != NULL ? SSL_CIPHER_standard_name(cipher) : NULL,
          NAPI_AUTO_LENGTH);
  const unsigned char* alpn = NULL;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  set_str(env, o, "alpn", alpn_len > 0 ? (const char*)alpn : NULL, alpn_len);
  set_str(env, o, "servername", SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name),
          NAPI_AUTO_LENGTH);
  napi_get_boolean(env, SSL_session_reused(ssl), &v);
  napi_set_named_property(env, o, "reused", v);

  X509* leaf = SSL_get0_peer_certificate(ssl);
  long result = SSL_get_verify_result(ssl);
  set_str(env, o, "verifyError",
          leaf == NULL || result == X509_V_OK ? NULL : tlsnet_x509_error_name(result),
          NAPI_AUTO_LENGTH);

  /* The verified chain (to the trusted root) when there is one, else what the peer sent. */
  napi_value chain;
  napi_create_array(env, &chain);
  uint32_t n = 0;
  STACK_OF(X509)* verified = result == X509_V_OK ? SSL_get0_verified_chain(ssl) : NULL;
  if (leaf != NULL && verified != NULL && sk_X509_num(verified) > 0) {
    for (int i = 0; i < sk_X509_num(verified); i++) {
      napi_set_element(env, chain, n++, der(env, sk_X509_value(verified, i)));
    }
  } else if (leaf != NULL) {
    napi_set_element(env, chain, n++, der(env, leaf));
    STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl);
    for (int i = 0; sent != NULL && i < sk_X509_num(sent); i++) {
      X509* x = sk_X509_value(sent, i);
      if (X509_cmp(x, leaf) != 0) napi_set_element(env, chain, n++, der(env, x));
    }
  }
  napi_set_named_property(env, o, "chain", chain);
  return o;
}

int tlsnet_check_host(conn_t* c, const char* name, int is_ip) {
  X509* leaf = SSL_get0_peer_certificate(c->ssl);
  if (leaf == NULL) return 0;
  int r = is_ip ? X509_check_ip_asc(leaf, name, 0)
                : X509_check_host(leaf, name, strlen(name), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                                  NULL);
  ERR_clear_error();
  return r == 1;
}
