/*
 * tlsnet native TLS engine: shared declarations.
 *
 * One addon_t per N-API environment (the decrypt slab, the JS dispatch
 * function); one conn_t per TLS connection (an SSL over a dup of the TCP
 * socket's fd, polled with uv_poll on Node's own loop). OpenSSL comes from the
 * Node process itself: the addon is not linked to libssl.
 */
#ifndef TLSNET_H
#define TLSNET_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stddef.h>
#include <stdint.h>

#include "uv_min.h"

/* Events delivered to the JS dispatch function: fn.call(receiver, EV_*, ...args). */
enum {
  EV_HANDSHAKE = 1, /* () handshake done; ask info() */
  EV_DATA = 2,      /* (slab, offset, length) plaintext lent from the slab */
  EV_EOF = 3,       /* () the peer's close_notify (or FIN) */
  EV_ERROR = 4,     /* (kind, code, text) fatal; the conn closes itself next */
  EV_DRAIN = 5,     /* () what write() queued has gone out */
  EV_KEYLOG = 6,    /* (lines) NSS key log lines, "\n"-separated */
  EV_SNI = 7,       /* (servername) server: choose a context now with setContext() */
  EV_SESSION = 8,   /* (Buffer) client: a session (ticket) to resume with, DER */
  EV_FINISHED = 9,  /* () end(): close_notify and FIN handed to the kernel */
  EV_CLOSE = 10     /* () fd closed, SSL freed; no more events */
};

/* Per environment. */
typedef struct addon_s {
  napi_env env;
  uv_loop_t* loop;
  napi_ref dispatch; /* the JS function every event goes to */
  napi_ref new_slab; /* JS: () => ArrayBuffer (untransferable) */
  napi_ref slab;     /* current slab */
  uint8_t* slab_data;
  size_t slab_size;
  size_t slab_off;
  X509_STORE* roots; /* default trust roots (Node's bundled list), built once */
  napi_ref conn_ctor;
  /* The environment is being torn down: no more calls into JS or napi handles. */
  int teardown;
  /* Conns not yet freed, and whether the environment let go of this struct: it is freed
     by whichever comes last, since a conn's handle can close after the environment's
     finalizer ran (uv_close at exit). */
  size_t conns;
  int released;
} addon_t;

/* A write not yet taken by OpenSSL. */
typedef struct wbuf_s {
  struct wbuf_s* next;
  const uint8_t* data;
  size_t len;
  napi_ref ref;   /* keeps the caller's buffer alive (large writes), or NULL */
  uint8_t* owned; /* our copy (small writes), or NULL */
} wbuf_t;

typedef struct {
  char kind[8]; /* "ssl", "sys", "eof" */
  char code[112];
  char text[200];
} conn_err_t;

typedef struct conn_s {
  addon_t* addon;
  SSL* ssl;
  int fd; /* our dup of the socket's fd */
  uv_poll_t* poll;
  int armed; /* events the poll is started with (0: stopped) */
  napi_ref receiver;
  napi_async_context actx;

  uint8_t* pre; /* bytes read before the hand-over, served first */
  size_t pre_len, pre_off;

  unsigned server : 1, sni : 1, sni_done : 1, started : 1, hs_done : 1, hs_want_write : 1,
      reading : 1, discard : 1, eof : 1, want_end : 1, end_wants_write : 1, fin_sent : 1,
      finished_pending : 1, read_wants_write : 1, write_wants_read : 1, write_blocked : 1,
      drain_pending : 1, kick : 1, failed : 1, err_pending : 1, closing : 1, closed : 1,
      finalized : 1, unref : 1, drained : 1, stepping : 1, notify_sent : 1;
  /* drained: a recv came back short since the poll last said readable, so the socket is empty
     for now; the next read answers "retry" without a syscall (libuv's rule for stream reads).
     stepping: on_poll is running step(), which a kick() from JS re-runs at its end. */
  int sys_errno; /* errno of the last failed recv/send */
  conn_err_t* err; /* the recorded error, allocated when there is one (most conns never fail) */

  uint8_t* out; /* encrypted bytes the kernel did not take yet (bio.c), sent before any other */
  size_t out_len, out_off;

  wbuf_t* wq_head;
  wbuf_t* wq_tail;
  size_t wq_bytes;

  char* keylog; /* lines not yet delivered */
  size_t keylog_len, keylog_cap;
  uint8_t* session; /* client: newest session, DER, not yet delivered */
  size_t session_len;
  char* servername; /* server: SNI received (for EV_SNI) */
  uint8_t* offered_alpn; /* server: the client's ALPN list (wire format) */
  size_t offered_alpn_len;
} conn_t;

/* Per SSL_CTX data (ex data). */
typedef struct {
  uint8_t* alpn; /* our protocols, wire format, server preference */
  size_t alpn_len;
  /* Session ticket keys, 48 bytes each (name 16, HMAC secret 16, AES key 16: node:tls's
     layout): the first encrypts, every one decrypts. NULL: OpenSSL's own random key. */
  uint8_t* ticket_keys;
  size_t ticket_key_count;
} ctx_data_t;

extern int tlsnet_conn_index;  /* SSL ex data: conn_t* */
extern int tlsnet_ctx_index;   /* SSL_CTX ex data: ctx_data_t* */

/* Decrypted bytes go into slabs of this size (see slab.c). */
#define TLSNET_SLAB_SIZE (64 * 1024)

/* selfcheck.c */
napi_value tlsnet_self_check(napi_env env, napi_callback_info info);

/* slab.c */
napi_value tlsnet_alloc_slab(napi_env env, napi_callback_info info);

/* addon.c */
void tlsnet_addon_conn_gone(addon_t* a);
napi_value tlsnet_throw(napi_env env, const char* code, const char* msg);
void tlsnet_emit(conn_t* c, int type, size_t argc, napi_value* argv);
int tlsnet_ensure_slab(addon_t* a, size_t min_room);

/* bio.c */
void tlsnet_bio_init(void);
BIO* tlsnet_bio_new(conn_t* c);
/* Output corking for the conn inside on_poll (see bio.c). flush/uncork: 0 all sent, 1 the
   kernel is full (the rest waits in c->out: poll for writable), -1 failed (c->sys_errno). */
void tlsnet_cork(conn_t* c);
int tlsnet_uncork(conn_t* c);
int tlsnet_flush_out(conn_t* c);

/* errors.c */
void tlsnet_take_error(conn_t* c, int ssl_err, int ret);
void tlsnet_set_error(conn_t* c, const char* kind, const char* code, const char* text);
void tlsnet_set_sys_error(conn_t* c);
const conn_err_t* tlsnet_error_of(const conn_t* c);
const char* tlsnet_x509_error_name(long code);
void tlsnet_ssl_error_text(char* code, size_t code_len, char* text, size_t text_len);

/* context.c */
int tlsnet_context_init(void);
napi_value tlsnet_new_context(napi_env env, napi_callback_info info);
napi_value tlsnet_set_roots(napi_env env, napi_callback_info info);
SSL_CTX* tlsnet_unwrap_context(napi_env env, napi_value v);

/* conn.c */
napi_value tlsnet_define_conn(napi_env env, addon_t* a);

/* info.c */
napi_value tlsnet_conn_info(napi_env env, conn_t* c);
int tlsnet_check_host(conn_t* c, const char* name, int is_ip);

#endif
