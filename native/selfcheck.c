/*
 * selfCheck(): before the native engine becomes a process's default, prove
 * that the OpenSSL this process runs does what the addon was compiled to
 * expect: a TLS 1.3 handshake between two SSL objects over memory BIOs (an
 * ephemeral P-256 key and a self-signed certificate, verified by the client
 * against itself, name checked), then a record each way. No socket, no file,
 * about a millisecond. Throws with what failed; returns the negotiated suite.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "tlsnet.h"

typedef struct {
  EVP_PKEY* key;
  X509* cert;
  SSL_CTX* server_ctx;
  SSL_CTX* client_ctx;
  SSL* server;
  SSL* client;
} check_t;

static void check_free(check_t* k) {
  SSL_free(k->client);
  SSL_free(k->server);
  SSL_CTX_free(k->client_ctx);
  SSL_CTX_free(k->server_ctx);
  X509_free(k->cert);
  EVP_PKEY_free(k->key);
}

static X509* self_signed(EVP_PKEY* key) {
  X509* x = X509_new();
  if (x == NULL) return NULL;
  X509_NAME* name = X509_get_subject_name(x);
  int ok = X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
           X509_gmtime_adj(X509_getm_notBefore(x), -60) &&
           X509_gmtime_adj(X509_getm_notAfter(x), 3600) &&
           X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                      (const unsigned char*)"selfcheck.tlsnet", -1, -1, 0) &&
           X509_set_issuer_name(x, name) && X509_set_pubkey(x, key) &&
           X509_sign(x, key, EVP_sha256()) > 0;
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* Step both ends until neither wants more; each SSL reads what the other wrote (BIO pair). */
static int handshake(SSL* client, SSL* server) {
  for (int i = 0; i < 16; i++) {
    int c = SSL_do_handshake(client);
    int s = SSL_do_handshake(server);
    if (c == 1 && s == 1) return 1;
    if (c <= 0 && SSL_get_error(client, c) != SSL_ERROR_WANT_READ) return 0;
    if (s <= 0 && SSL_get_error(server, s) != SSL_ERROR_WANT_READ) return 0;
  }
  return 0;
}

static int one_record(SSL* from, SSL* to, const char* text) {
  char buf[64];
  int n = (int)strlen(text);
  if (SSL_write(from, text, n) != n) return 0;
  int got = 0;
  for (int i = 0; i < 4 && got <= 0; i++) got = SSL_read(to, buf, sizeof buf);
  return got == n && memcmp(buf, text, (size_t)n) == 0;
}

static napi_value fail(napi_env env, check_t* k, const char* step) {
  char code[112], text[200], msg[360];
  tlsnet_ssl_error_text(code, sizeof code, text, sizeof text);
  snprintf(msg, sizeof msg, "self-check failed at %s: %s", step, text);
  check_free(k);
  ERR_clear_error();
  return tlsnet_throw(env, "ERR_TLSNET_NATIVE", msg);
}

napi_value tlsnet_self_check(napi_env env, napi_callback_info info) {
  (void)info;
  check_t k = {0};
  ERR_clear_error();
  k.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (k.key == NULL) return fail(env, &k, "P-256 key generation");
  k.cert = self_signed(k.key);
  if (k.cert == NULL) return fail(env, &k, "certificate signing");

  k.server_ctx = SSL_CTX_new(TLS_server_method());
  k.client_ctx = SSL_CTX_new(TLS_client_method());
  if (k.server_ctx == NULL || k.client_ctx == NULL) return fail(env, &k, "SSL_CTX_new");
  if (!SSL_CTX_use_certificate(k.server_ctx, k.cert) ||
      !SSL_CTX_use_PrivateKey(k.server_ctx, k.key)) {
    return fail(env, &k, "loading the certificate");
  }
  SSL_CTX_set_min_proto_version(k.server_ctx, TLS1_3_VERSION);
  SSL_CTX_set_min_proto_version(k.client_ctx, TLS1_3_VERSION);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(k.client_ctx), k.cert);
  SSL_CTX_set_verify(k.client_ctx, SSL_VERIFY_PEER, NULL);

  k.server = SSL_new(k.server_ctx);
  k.client = SSL_new(k.client_ctx);
  BIO *cb = NULL, *sb = NULL;
  if (k.server == NULL || k.client == NULL || !BIO_new_bio_pair(&cb, 0, &sb, 0)) {
    return fail(env, &k, "SSL_new");
  }
  SSL_set_bio(k.client, cb, cb);
  SSL_set_bio(k.server, sb, sb);
  SSL_set_connect_state(k.client);
  SSL_set_accept_state(k.server);
  if (!SSL_set1_host(k.client, "selfcheck.tlsnet")) return fail(env, &k, "SSL_set1_host");
  if (!handshake(k.client, k.server)) return fail(env, &k, "the handshake");
  if (SSL_get_verify_result(k.client) != X509_V_OK) return fail(env, &k, "verification");
  if (!one_record(k.client, k.server, "ping") || !one_record(k.server, k.client, "pong")) {
    return fail(env, &k, "application data");
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(k.client);
  napi_value out;
  napi_create_string_utf8(env, cipher != NULL ? SSL_CIPHER_standard_name(cipher) : "?",
                          NAPI_AUTO_LENGTH, &out);
  check_free(&k);
  ERR_clear_error();
  return out;
}
