/*
 * SSL_CTX construction: one context per certificate entry (servers) or one per
 * config (clients), built from the options the JS side validated already
 * (src/tls/engine/native-context.ts), and the callbacks every context shares:
 * ALPN selection with server preference, SNI by asking JS once per handshake,
 * key log lines, client sessions, and a verify callback that lets the
 * handshake finish so the JS side can report the verdict in its own words.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "tlsnet.h"

int tlsnet_conn_index = -1;
int tlsnet_ctx_index = -1;

static const napi_type_tag ctx_tag = {0x746c736e65744354ULL, 0x53534c5f43545821ULL};

static conn_t* conn_of(const SSL* ssl) {
  return (conn_t*)SSL_get_ex_data(ssl, tlsnet_conn_index);
}

/* ------------------------------------------------------------- callbacks */

static int verify_cb(int ok, X509_STORE_CTX* store) {
  (void)ok;
  (void)store;
  return 1; /* the result stays in SSL_get_verify_result; JS judges it */
}

static void keylog_cb(const SSL* ssl, const char* line) {
  conn_t* c = conn_of(ssl);
  if (c == NULL) return;
  size_t n = strlen(line);
  if (c->keylog_len + n + 1 > c->keylog_cap) {
    size_t cap = (c->keylog_len + n + 1) * 2;
    char* p = realloc(c->keylog, cap);
    if (p == NULL) return;
    c->keylog = p;
    c->keylog_cap = cap;
  }
  memcpy(c->keylog + c->keylog_len, line, n);
  c->keylog[c->keylog_len + n] = '\n';
  c->keylog_len += n + 1;
}

static int new_session_cb(SSL* ssl, SSL_SESSION* sess) {
  conn_t* c = conn_of(ssl);
  if (c == NULL) return 0;
  int len = i2d_SSL_SESSION(sess, NULL);
  if (len <= 0) return 0;
  uint8_t* buf = malloc((size_t)len);
  if (buf == NULL) return 0;
  uint8_t* p = buf;
  i2d_SSL_SESSION(sess, &p);
  free(c->session);
  c->session = buf;
  c->session_len = (size_t)len;
  return 0; /* we keep a copy, not the SSL_SESSION */
}

/* Server: with several contexts, stop at the ClientHello once so JS can pick one (EV_SNI). */
static int client_hello_cb(SSL* ssl, int* alert, void* arg) {
  (void)alert;
  (void)arg;
  conn_t* c = conn_of(ssl);
  if (c == NULL || !c->sni || c->sni_done) return SSL_CLIENT_HELLO_SUCCESS;
  const unsigned char* p;
  size_t len;
  if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5) {
    c->sni_done = 1;
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  size_t list = ((size_t)p[0] << 8) | p[1];
  if (list + 2 > len || p[2] != TLSEXT_NAMETYPE_host_name) {
    c->sni_done = 1;
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  size_t n = ((size_t)p[3] << 8) | p[4];
  if (n == 0 || n > 255 || 5 + n > len || memchr(p + 5, 0, n) != NULL) {
    c->sni_done = 1;
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  free(c->servername);
  c->servername = malloc(n + 1);
  if (c->servername == NULL) {
    c->sni_done = 1;
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  memcpy(c->servername, p + 5, n);
  c->servername[n] = '\0';
  return SSL_CLIENT_HELLO_RETRY;
}

/* Server preference: our first protocol the client also offers; none: alert 120. */
static int alpn_select_cb(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                          const unsigned char* in, unsigned int inlen, void* arg) {
  ctx_data_t* d = arg;
  conn_t* c = conn_of(ssl);
  if (c != NULL) {
    free(c->offered_alpn);
    c->offered_alpn = malloc(inlen > 0 ? inlen : 1);
    if (c->offered_alpn != NULL) memcpy(c->offered_alpn, in, inlen);
    c->offered_alpn_len = c->offered_alpn != NULL ? inlen : 0;
  }
  for (size_t i = 0; i < d->alpn_len; i += 1 + d->alpn[i]) {
    unsigned char n = d->alpn[i];
    for (unsigned int j = 0; j < inlen; j += 1 + in[j]) {
      if (j + 1 + in[j] > inlen) break;
      if (in[j] == n && memcmp(in + j + 1, d->alpn + i + 1, n) == 0) {
        *out = in + j + 1;
        *outlen = n;
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/*
 * Session tickets under the config's keys, in node:tls's format (AES-128-CBC, HMAC-SHA256,
 * the same 48-byte layout), so that a fleet can mix engines. Encrypt with the first key;
 * decrypt with whichever key the ticket names, and ask for a fresh ticket (2) when that key is
 * no longer the first, so that clients move to the new key during a rotation.
 */
#define TICKET_KEY_LEN 48
static int ticket_key_cb(SSL* ssl, unsigned char name[16], unsigned char* iv,
                         EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) {
  ctx_data_t* d = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tlsnet_ctx_index);
  if (d == NULL || d->ticket_key_count == 0) return enc ? -1 : 0;
  size_t i = 0;
  if (enc) {
    if (RAND_bytes(iv, 16) <= 0) return -1;
    memcpy(name, d->ticket_keys, 16);
  } else {
    while (i < d->ticket_key_count && memcmp(name, d->ticket_keys + i * TICKET_KEY_LEN, 16) != 0)
      i++;
    if (i == d->ticket_key_count) return 0; /* not ours: a full handshake */
  }
  const uint8_t* key = d->ticket_keys + i * TICKET_KEY_LEN;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void*)(key + 16), 16),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char*)"SHA256", 0),
      OSSL_PARAM_construct_end(),
  };
  if (!EVP_MAC_CTX_set_params(mac, params)) return -1;
  int ok = enc ? EVP_EncryptInit_ex(cipher, EVP_aes_128_cbc(), NULL, key + 32, iv)
               : EVP_DecryptInit_ex(cipher, EVP_aes_128_cbc(), NULL, key + 32, iv);
  if (!ok) return -1;
  return enc || i == 0 ? 1 : 2;
}

/* ------------------------------------------------------------- helpers */

typedef struct {
  char* data;
  size_t len;
} str_t;

/* A string property (UTF-8, malloc'd, NUL-terminated), or {NULL, 0} when absent/undefined. */
static int get_str(napi_env env, napi_value obj, const char* key, str_t* out) {
  napi_value v;
  napi_valuetype t;
  out->data = NULL;
  out->len = 0;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return 0;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t != napi_string) return t == napi_undefined || t == napi_null;
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return 0;
  out->data = malloc(n + 1);
  if (out->data == NULL) return 0;
  napi_get_value_string_utf8(env, v, out->data, n + 1, &out->len);
  return 1;
}

static int get_int(napi_env env, napi_value obj, const char* key, int32_t dflt) {
  napi_value v;
  int32_t n = dflt;
  if (napi_get_named_property(env, obj, key, &v) == napi_ok) napi_get_value_int32(env, v, &n);
  return n;
}

static int get_bool(napi_env env, napi_value obj, const char* key) {
  napi_value v;
  bool b = false;
  if (napi_get_named_property(env, obj, key, &v) == napi_ok) napi_get_value_bool(env, v, &b);
  return b;
}

static int no_password(char* buf, int size, int rwflag, void* u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return 0; /* never prompt on a terminal */
}

static int with_password(char* buf, int size, int rwflag, void* u) {
  (void)rwflag;
  const char* pass = u;
  size_t n = strlen(pass);
  if (n > (size_t)size) return -1;
  memcpy(buf, pass, n);
  return (int)n;
}

/* Every certificate in a PEM text, to `fn`; the count, or -1 when one does not parse. */
static int each_cert(const char* pem, size_t len, int (*fn)(X509*, void*), void* arg) {
  BIO* b = BIO_new_mem_buf(pem, (int)len);
  if (b == NULL) return -1;
  int count = 0;
  X509* x;
  while ((x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
    int ok = fn(x, arg);
    X509_free(x);
    if (!ok) {
      count = -1;
      break;
    }
    count++;
  }
  BIO_free(b);
  ERR_clear_error(); /* the end of the text reads as "no start line" */
  return count;
}

static int add_to_store(X509* x, void* arg) {
  X509_STORE_add_cert((X509_STORE*)arg, x);
  ERR_clear_error(); /* a duplicate is not an error here */
  return 1;
}

static int add_client_ca(X509* x, void* arg) {
  return SSL_CTX_add_client_CA((SSL_CTX*)arg, x);
}

static int add_chain_cert(X509* x, void* arg) {
  return SSL_CTX_add1_chain_cert((SSL_CTX*)arg, x);
}

static napi_value fail(napi_env env, SSL_CTX* ctx, const char* what) {
  char code[112], text[200], msg[320];
  tlsnet_ssl_error_text(code, sizeof code, text, sizeof text);
  snprintf(msg, sizeof msg, "%s: %s", what, text);
  if (ctx != NULL) SSL_CTX_free(ctx);
  return tlsnet_throw(env, code, msg);
}

static void ctx_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  SSL_CTX_free((SSL_CTX*)data);
}

static void ctx_data_free(void* parent, void* ptr, CRYPTO_EX_DATA* ad, int idx, long argl,
                          void* argp) {
  (void)parent;
  (void)ad;
  (void)idx;
  (void)argl;
  (void)argp;
  ctx_data_t* d = ptr;
  if (d == NULL) return;
  free(d->alpn);
  if (d->ticket_keys != NULL) OPENSSL_clear_free(d->ticket_keys, d->ticket_key_count * TICKET_KEY_LEN);
  free(d);
}

SSL_CTX* tlsnet_unwrap_context(napi_env env, napi_value v) {
  bool ok = false;
  void* p = NULL;
  if (napi_check_object_type_tag(env, v, &ctx_tag, &ok) != napi_ok || !ok) return NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* setRoots(pems: string[]): the default trust store (Node's bundled roots), built once. */
napi_value tlsnet_set_roots(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arr;
  addon_t* a;
  napi_get_cb_info(env, info, &argc, &arr, NULL, NULL);
  napi_get_instance_data(env, (void**)&a);
  if (a->roots != NULL) return NULL;
  X509_STORE* store = X509_STORE_new();
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, arr, i, &v);
    size_t len;
    napi_get_value_string_utf8(env, v, NULL, 0, &len);
    char* pem = malloc(len + 1);
    if (pem == NULL) continue;
    napi_get_value_string_utf8(env, v, pem, len + 1, &len);
    each_cert(pem, len, add_to_store, store);
    free(pem);
  }
  a->roots = store;
  return NULL;
}

/* ------------------------------------------------------------- newContext */

/*
 * newContext({ server, cert, key, passphrase, ca: string[] | undefined, useRoots,
 *   minVersion, maxVersion, cipherList, cipherSuites, alpn: Buffer (wire format),
 *   verify: SSL_VERIFY_* flags, sessionIdContext, keyLog, clientSessions })
 */
napi_value tlsnet_new_context(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value o;
  addon_t* a;
  napi_get_cb_info(env, info, &argc, &o, NULL, NULL);
  napi_get_instance_data(env, (void**)&a);
  int server = get_bool(env, o, "server");

  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) return fail(env, NULL, "SSL_CTX_new");
  ctx_data_t* d = calloc(1, sizeof *d);
  if (d == NULL || !SSL_CTX_set_ex_data(ctx, tlsnet_ctx_index, d)) {
    free(d);
    return fail(env, ctx, "SSL_CTX_set_ex_data");
  }

  uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION;
  if (server) opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
  SSL_CTX_set_options(ctx, opts);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);

  if (!SSL_CTX_set_min_proto_version(ctx, get_int(env, o, "minVersion", TLS1_2_VERSION)) ||
      !SSL_CTX_set_max_proto_version(ctx, get_int(env, o, "maxVersion", TLS1_3_VERSION))) {
    return fail(env, ctx, "protocol versions");
  }

  str_t s;
  if (get_str(env, o, "cipherList", &s) && s.data != NULL && s.len > 0 &&
      !SSL_CTX_set_cipher_list(ctx, s.data)) {
    free(s.data);
    return fail(env, ctx, "ciphers");
  }
  free(s.data);
  if (get_str(env, o, "cipherSuites", &s) && s.data != NULL &&
      !SSL_CTX_set_ciphersuites(ctx, s.data)) {
    free(s.data);
    return fail(env, ctx, "TLS 1.3 cipher suites");
  }
  free(s.data);

  /* Our certificate (leaf first, then its chain) and key. */
  str_t cert, key, pass;
  get_str(env, o, "cert", &cert);
  get_str(env, o, "key", &key);
  get_str(env, o, "passphrase", &pass);
  if (cert.data != NULL && key.data != NULL) {
    BIO* b = BIO_new_mem_buf(cert.data, (int)cert.len);
    X509* leaf = b != NULL ? PEM_read_bio_X509_AUX(b, NULL, no_password, NULL) : NULL;
    int ok = leaf != NULL && SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (ok) {
      X509* x;
      while (ok && (x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
        ok = add_chain_cert(x, ctx);
        X509_free(x);
      }
      ERR_clear_error();
    }
    BIO_free(b);
    if (ok) {
      BIO* kb = BIO_new_mem_buf(key.data, (int)key.len);
      EVP_PKEY* pkey =
          kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, pass.data ? with_password : no_password,
                                               pass.data)
                     : NULL;
      ok = pkey != NULL && SSL_CTX_use_PrivateKey(ctx, pkey) && SSL_CTX_check_private_key(ctx);
      EVP_PKEY_free(pkey);
      BIO_free(kb);
    }
    if (pass.data != NULL) OPENSSL_cleanse(pass.data, pass.len);
    free(cert.data);
    free(key.data);
    free(pass.data);
    if (!ok) return fail(env, ctx, "certificate or key");
  } else {
    free(cert.data);
    free(key.data);
    free(pass.data);
  }

  /* Trust: the config's CA list, else Node's bundled roots. */
  napi_value ca;
  bool is_array = false;
  if (napi_get_named_property(env, o, "ca", &ca) == napi_ok &&
      napi_is_array(env, ca, &is_array) == napi_ok && is_array) {
    X509_STORE* store = X509_STORE_new();
    SSL_CTX_set_cert_store(ctx, store);
    uint32_t n = 0;
    napi_get_array_length(env, ca, &n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value v;
      napi_get_element(env, ca, i, &v);
      size_t len;
      napi_get_value_string_utf8(env, v, NULL, 0, &len);
      char* pem = malloc(len + 1);
      if (pem == NULL) return fail(env, ctx, "out of memory");
      napi_get_value_string_utf8(env, v, pem, len + 1, &len);
      int r = each_cert(pem, len, add_to_store, store);
      if (r >= 0 && server) r = each_cert(pem, len, add_client_ca, ctx);
      free(pem);
      if (r < 0) return fail(env, ctx, "CA certificates");
    }
  } else if (get_bool(env, o, "useRoots") && a->roots != NULL) {
    SSL_CTX_set1_cert_store(ctx, a->roots);
  }
  SSL_CTX_set_verify(ctx, get_int(env, o, "verify", SSL_VERIFY_NONE), verify_cb);

  if (get_str(env, o, "sessionIdContext", &s) && s.data != NULL) {
    size_t n = s.len > SSL_MAX_SID_CTX_LENGTH ? SSL_MAX_SID_CTX_LENGTH : s.len;
    SSL_CTX_set_session_id_context(ctx, (const unsigned char*)s.data, (unsigned int)n);
  }
  free(s.data);

  /* ALPN: the list to offer (client) or to choose from (server), wire format. */
  napi_value alpn;
  bool is_buffer = false;
  if (napi_get_named_property(env, o, "alpn", &alpn) == napi_ok &&
      napi_is_buffer(env, alpn, &is_buffer) == napi_ok && is_buffer) {
    void* p;
    size_t n;
    napi_get_buffer_info(env, alpn, &p, &n);
    d->alpn = malloc(n);
    if (d->alpn == NULL) return fail(env, ctx, "out of memory");
    memcpy(d->alpn, p, n);
    d->alpn_len = n;
    if (server) {
      SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, d);
    } else if (SSL_CTX_set_alpn_protos(ctx, d->alpn, (unsigned int)n) != 0) {
      return fail(env, ctx, "ALPN protocols");
    }
  }

  /* Ticket keys (servers): one Buffer of 48-byte keys, first key first. */
  napi_value tk;
  is_buffer = false;
  if (server && napi_get_named_property(env, o, "ticketKeys", &tk) == napi_ok &&
      napi_is_buffer(env, tk, &is_buffer) == napi_ok && is_buffer) {
    void* p;
    size_t n;
    napi_get_buffer_info(env, tk, &p, &n);
    if (n == 0 || n % TICKET_KEY_LEN != 0) {
      SSL_CTX_free(ctx);
      return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "ticketKeys: 48-byte keys expected");
    }
    d->ticket_keys = malloc(n);
    if (d->ticket_keys == NULL) return fail(env, ctx, "out of memory");
    memcpy(d->ticket_keys, p, n);
    d->ticket_key_count = n / TICKET_KEY_LEN;
  } else if (server) {
    /* None given: a random key of this context's own, as node:tls makes for each of its
       contexts. OpenSSL's built-in ticket keys would serve too, but with them OpenSSL renews
       the ticket on every TLS 1.3 resumption: one more NewSessionTicket to encode, encrypt and
       send per resumed handshake, which node:tls (and this callback, on its first key) does
       not do. */
    d->ticket_keys = malloc(TICKET_KEY_LEN);
    if (d->ticket_keys == NULL) return fail(env, ctx, "out of memory");
    if (RAND_bytes(d->ticket_keys, TICKET_KEY_LEN) <= 0) return fail(env, ctx, "ticket key");
    d->ticket_key_count = 1;
  }
  if (d->ticket_key_count > 0 && !SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb)) {
    return fail(env, ctx, "session ticket keys");
  }

  if (server) {
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
    /* No server-side session cache, as node:tls (SecureContext::Init): resumption is by
       tickets only. OpenSSL's internal cache would keep every TLS 1.2 session (up to 20,480
       of them, ~1 KiB each) well after its conn closed. */
    SSL_CTX_set_session_cache_mode(
        ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL | SSL_SESS_CACHE_NO_AUTO_CLEAR);
  } else if (get_bool(env, o, "clientSessions")) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
  }
  if (get_bool(env, o, "keyLog")) SSL_CTX_set_keylog_callback(ctx, keylog_cb);

  napi_value ext;
  if (napi_create_external(env, ctx, ctx_finalize, NULL, &ext) != napi_ok) {
    SSL_CTX_free(ctx);
    return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "napi_create_external failed");
  }
  napi_type_tag_object(env, ext, &ctx_tag);
  return ext;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void) {
  tlsnet_conn_index = SSL_get_ex_new_index(0, "tlsnet conn", NULL, NULL, NULL);
  tlsnet_ctx_index = SSL_CTX_get_ex_new_index(0, "tlsnet ctx", NULL, NULL, ctx_data_free);
  tlsnet_bio_init();
}

/* Once per process (worker threads load the addon too): ex data indices, the BIO method. */
int tlsnet_context_init(void) {
  pthread_once(&init_once, init);
  return tlsnet_conn_index >= 0 && tlsnet_ctx_index >= 0;
}
