/*
 * One TLS connection on a dup of the TCP socket's fd, polled with uv_poll on
 * Node's loop. The handshake, reads, writes and close_notify run here; JS is
 * told what happened through tlsnet_emit (one call per batch of records).
 *
 * Reads decrypt into the addon's slab (an ArrayBuffer JS owns) and lend the
 * bytes as (slab, offset, length): no copy, no allocation per record. Writes
 * encrypt straight from the caller's buffer; what the kernel does not take
 * waits in a queue (small writes copied, large ones kept by reference) and
 * write() answers with the bytes still queued (0: all sent).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsnet.h"

#define BATCH_MAX (256 * 1024) /* plaintext per EV_DATA */
#define READ_BUDGET (1024 * 1024) /* plaintext per wake-up before the loop gets a turn */
#define MIN_ROOM (16 * 1024)   /* one full record */
#define COPY_MAX (16 * 1024)   /* queued writes up to this size are copied */
#define SCRATCH (64 * 1024)    /* writev of small parts: one buffer, fewer records */

static _Thread_local uint8_t scratch[SCRATCH]; /* per thread: workers load the addon too */

static void update_poll(conn_t* c);
static void start_close(conn_t* c);

/* ------------------------------------------------------------- lifetime */

static void conn_free(conn_t* c) {
  tlsnet_addon_conn_gone(c->addon);
  free(c->err);
  free(c->keylog);
  free(c->session);
  free(c->servername);
  free(c->offered_alpn);
  free(c->pre);
  free(c->out);
  free(c);
}

static void wq_pop(conn_t* c) {
  wbuf_t* w = c->wq_head;
  c->wq_head = w->next;
  if (c->wq_head == NULL) c->wq_tail = NULL;
  c->wq_bytes -= w->len;
  if (w->ref != NULL) napi_delete_reference(c->addon->env, w->ref);
  free(w->owned);
  free(w);
}

static void on_closed(uv_handle_t* h) {
  conn_t* c = uv_handle_get_data(h);
  napi_env env = c->addon->env;
  free(h);
  c->poll = NULL;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  if (c->ssl != NULL) SSL_free(c->ssl);
  c->ssl = NULL;
  if (c->addon->teardown) {
    /* The environment is going away: no JS, no napi; its references go with it. */
    c->closed = 1;
    if (c->finalized) conn_free(c);
    return;
  }
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  while (c->wq_head != NULL) wq_pop(c);
  if (!c->finalized) tlsnet_emit(c, EV_CLOSE, 0, NULL);
  napi_async_destroy(env, c->actx);
  c->actx = NULL;
  napi_delete_reference(env, c->receiver);
  c->receiver = NULL;
  napi_close_handle_scope(env, scope);
  c->closed = 1;
  if (c->finalized) conn_free(c);
}

static void start_close(conn_t* c) {
  if (c->closing) return;
  if (c->fd >= 0) tlsnet_flush_out(c); /* what was written before the close, if it can go */
  c->closing = 1;
  uv_close((uv_handle_t*)c->poll, on_closed); /* stops the poll too: no uv_poll_stop first */
}

static void conn_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  conn_t* c = data;
  c->finalized = 1;
  if (c->closed) conn_free(c);
  else start_close(c); /* on_closed frees it */
}

/*
 * A handshake failed here: our alert is written, and the rest of the peer's flight (a TLS 1.2
 * client's ChangeCipherSpec and Finished after the Certificate we refused) may sit unread in
 * the kernel. Closing over unread bytes sends a reset, which can reach the peer before it
 * reads our alert and turn "certificate required" into "connection reset". Read what has
 * arrived and drop it first (no waiting: the flight came in one piece).
 */
static void drop_arrived_input(conn_t* c) {
  uint8_t buf[4096];
  for (int i = 0; i < 16; i++) {
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
  }
}

/*
 * A write or read failed with a reset or a broken pipe after the handshake. The peer may have
 * said why first, in an alert that is still in the socket (a TLS 1.3 server refusing our
 * client certificate sends it after our handshake finished, then closes; the reset that follows
 * our next write can be seen before the alert is read). Read what is there: if it ends in an
 * alert, that alert is the error to report.
 */
static void prefer_peer_alert(conn_t* c) {
  const conn_err_t* err = tlsnet_error_of(c);
  if (c->ssl == NULL || c->fd < 0 || strcmp(err->kind, "sys") != 0 ||
      (strcmp(err->code, "EPIPE") != 0 && strcmp(err->code, "ECONNRESET") != 0)) {
    return;
  }
  uint8_t buf[4096];
  c->drained = 0; /* the BIO reads the socket again */
  for (int i = 0; i < 64; i++) {
    ERR_clear_error();
    c->sys_errno = 0;
    int r = SSL_read(c->ssl, buf, sizeof buf);
    if (r > 0) continue; /* data that came before it: the conn is failing anyway */
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_SSL) tlsnet_take_error(c, SSL_ERROR_SSL, r);
    break;
  }
  ERR_clear_error();
}

/* Deliver the recorded error, then close. */
static void fail_now(conn_t* c) {
  if (!c->hs_done && c->fd >= 0) drop_arrived_input(c);
  if (c->hs_done) prefer_peer_alert(c);
  c->failed = 1;
  c->err_pending = 0;
  napi_env env = c->addon->env;
  napi_value argv[3];
  const conn_err_t* err = tlsnet_error_of(c);
  napi_create_string_utf8(env, err->kind, NAPI_AUTO_LENGTH, &argv[0]);
  napi_create_string_utf8(env, err->code, NAPI_AUTO_LENGTH, &argv[1]);
  napi_create_string_utf8(env, err->text, NAPI_AUTO_LENGTH, &argv[2]);
  tlsnet_emit(c, EV_ERROR, 3, argv);
  start_close(c);
}

/* An error found inside a call from JS: delivered from the loop, never re-entrantly. */
static void fail_later(conn_t* c) {
  c->failed = 1;
  c->kick = 1;
  update_poll(c);
}

/* ------------------------------------------------------------- side events */

static void flush_side(conn_t* c) {
  napi_env env = c->addon->env;
  if (c->keylog_len > 0 && !c->closing) {
    napi_value v;
    napi_create_string_latin1(env, c->keylog, c->keylog_len, &v);
    c->keylog_len = 0;
    tlsnet_emit(c, EV_KEYLOG, 1, &v);
  }
  if (c->session != NULL && !c->closing) {
    napi_value v;
    void* p;
    napi_create_buffer_copy(env, c->session_len, c->session, &p, &v);
    free(c->session);
    c->session = NULL;
    tlsnet_emit(c, EV_SESSION, 1, &v);
  }
}

/* ------------------------------------------------------------- handshake */

/* After a successful handshake: what only a handshake (or its failure) needs goes. The SNI
   name (SSL_get_servername answers info()), the client's ALPN list (for the mismatch error),
   and the key log buffer once delivered (a later line allocates it again). */
static void release_handshake_state(conn_t* c) {
  free(c->servername);
  c->servername = NULL;
  free(c->offered_alpn);
  c->offered_alpn = NULL;
  c->offered_alpn_len = 0;
  if (c->keylog_len == 0) {
    free(c->keylog);
    c->keylog = NULL;
    c->keylog_cap = 0;
  }
}

static void handshake(conn_t* c) {
  for (;;) {
    ERR_clear_error();
    c->sys_errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      c->hs_done = 1;
      return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      c->hs_want_write = e == SSL_ERROR_WANT_WRITE;
      return;
    }
    if (e == SSL_ERROR_WANT_CLIENT_HELLO_CB) {
      napi_value name;
      napi_create_string_utf8(c->addon->env, c->servername, NAPI_AUTO_LENGTH, &name);
      c->sni_done = 1;
      tlsnet_emit(c, EV_SNI, 1, &name); /* JS calls setContext() before returning */
      if (c->closing) return;
      continue;
    }
    tlsnet_take_error(c, e, r);
    c->failed = 1;
    return;
  }
}

/* ------------------------------------------------------------- writing */

/* 0: all written; 1: the rest must wait (*done bytes taken); -1: failed (error recorded). */
static int write_bytes(conn_t* c, const uint8_t* data, size_t len, size_t* done) {
  *done = 0;
  while (*done < len) {
    size_t n = len - *done;
    if (n > (1u << 30)) n = 1u << 30;
    ERR_clear_error();
    c->sys_errno = 0;
    int r = SSL_write(c->ssl, data + *done, (int)n);
    if (r > 0) {
      *done += (size_t)r;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
      c->write_wants_read = e == SSL_ERROR_WANT_READ;
      return 1;
    }
    tlsnet_take_error(c, e, r);
    return -1;
  }
  c->write_wants_read = 0;
  return 0;
}

static int wq_push(conn_t* c, napi_value keep, const uint8_t* data, size_t len) {
  wbuf_t* w = calloc(1, sizeof *w);
  if (w == NULL) return 0;
  if (keep == NULL || len <= COPY_MAX) {
    w->owned = malloc(len);
    if (w->owned == NULL) {
      free(w);
      return 0;
    }
    memcpy(w->owned, data, len);
    w->data = w->owned;
  } else {
    if (napi_create_reference(c->addon->env, keep, 1, &w->ref) != napi_ok) {
      free(w);
      return 0;
    }
    w->data = data;
  }
  w->len = len;
  if (c->wq_tail != NULL) c->wq_tail->next = w;
  else c->wq_head = w;
  c->wq_tail = w;
  c->wq_bytes += len;
  return 1;
}

/* Write now if nothing waits, else queue. 0 on success (sent or queued), -1 failed. */
static int submit(conn_t* c, napi_value keep, const uint8_t* data, size_t len) {
  if (len == 0) return 0;
  if (c->wq_head == NULL) {
    size_t done;
    int r = write_bytes(c, data, len, &done);
    if (r <= 0) return r;
    data += done;
    len -= done;
  }
  if (!wq_push(c, keep, data, len)) {
    tlsnet_set_error(c, "sys", "ENOMEM", "out of memory queueing a write");
    return -1;
  }
  c->write_blocked = 1;
  return 0;
}

static void flush_writes(conn_t* c) {
  while (c->wq_head != NULL) {
    wbuf_t* w = c->wq_head;
    size_t done;
    int r = write_bytes(c, w->data, w->len, &done);
    w->data += done;
    w->len -= done;
    c->wq_bytes -= done;
    if (r < 0) {
      c->failed = 1;
      return;
    }
    if (r > 0) return;
    wq_pop(c);
  }
  if (c->write_blocked) {
    c->write_blocked = 0;
    c->drain_pending = 1;
  }
}

/* close_notify, then FIN, once everything queued is out. */
static void do_end(conn_t* c) {
  if (!c->notify_sent) {
    ERR_clear_error();
    c->sys_errno = 0;
    int r = SSL_shutdown(c->ssl);
    if (r < 0) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_WRITE) {
        c->end_wants_write = 1;
        return;
      }
      if (e != SSL_ERROR_WANT_READ) {
        tlsnet_take_error(c, e, r);
        c->failed = 1;
        return;
      }
    }
    ERR_clear_error();
    c->notify_sent = 1;
  }
  /* The close_notify may be corked: it goes before the FIN. */
  int f = tlsnet_flush_out(c);
  if (f > 0) {
    c->end_wants_write = 1;
    return;
  }
  if (f < 0) {
    tlsnet_set_sys_error(c);
    c->failed = 1;
    return;
  }
  c->end_wants_write = 0;
  shutdown(c->fd, SHUT_WR);
  c->fin_sent = 1;
  c->finished_pending = 1;
}

/* ------------------------------------------------------------- reading */

static void emit_data(conn_t* c, size_t start, size_t len) {
  addon_t* a = c->addon;
  napi_env env = a->env;
  napi_value argv[3];
  napi_get_reference_value(env, a->slab, &argv[0]);
  napi_create_uint32(env, (uint32_t)start, &argv[1]);
  napi_create_uint32(env, (uint32_t)len, &argv[2]);
  tlsnet_emit(c, EV_DATA, 3, argv);
}

static void do_reads(conn_t* c) {
  addon_t* a = c->addon;
  size_t spent = 0;
  for (;;) {
    if (c->closing || c->failed || c->eof || !(c->reading || c->discard)) return;
    if (!tlsnet_ensure_slab(a, MIN_ROOM)) {
      tlsnet_set_error(c, "sys", "ENOMEM", "cannot allocate a read buffer");
      c->failed = 1;
      return;
    }
    size_t start = a->slab_off;
    size_t got = 0;
    int ssl_err = SSL_ERROR_NONE;
    int ret = 0;
    while (got < BATCH_MAX) {
      size_t room = a->slab_size - a->slab_off;
      if (room < MIN_ROOM) break;
      if (room > INT_MAX) room = INT_MAX;
      ERR_clear_error();
      c->sys_errno = 0;
      ret = SSL_read(c->ssl, a->slab_data + a->slab_off, (int)room);
      if (ret > 0) {
        if (!c->discard) {
          a->slab_off += (size_t)ret;
          got += (size_t)ret;
        }
        /* Nothing left inside OpenSSL and the socket is drained: another SSL_read could only
           say WANT_READ. Skip it, as libuv skips the read that would say EAGAIN; the poll
           calls again when more comes. One SSL_read per message instead of two. */
        if (c->drained && c->pre == NULL && !SSL_has_pending(c->ssl)) {
          ssl_err = SSL_ERROR_WANT_READ;
          break;
        }
        continue;
      }
      ssl_err = SSL_get_error(c->ssl, ret);
      break;
    }
    c->read_wants_write = 0;
    if (got > 0) {
      emit_data(c, start, got);
      if (c->closing) return;
    }
    spent += got;
    switch (ssl_err) {
      case SSL_ERROR_NONE:
        /* The batch or the slab was full: go on, but not forever. A peer that sends faster
           than we decrypt would keep this loop busy and starve every timer, every other conn
           and the collection of finished slabs. With bytes still in the socket, the poll
           (level-triggered) calls again after the loop's turn; bytes already inside OpenSSL
           have no poll event to come back for, so those are read now. */
        if (spent >= READ_BUDGET && !c->drained) return;
        continue;
      case SSL_ERROR_WANT_READ:
        return;
      case SSL_ERROR_WANT_WRITE:
        c->read_wants_write = 1;
        return;
      case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        c->eof = 1;
        tlsnet_emit(c, EV_EOF, 0, NULL);
        return;
      default:
        if (ssl_err == SSL_ERROR_SYSCALL && c->sys_errno == 0 && ERR_peek_error() == 0) {
          c->eof = 1; /* FIN without close_notify: an end, as node:tls sees it */
          tlsnet_emit(c, EV_EOF, 0, NULL);
          return;
        }
        tlsnet_take_error(c, ssl_err, ret);
        c->failed = 1;
        return;
    }
  }
}

/* ------------------------------------------------------------- the loop */

static void step(conn_t* c) {
  if (c->failed) {
    fail_now(c);
    return;
  }
  if (!c->hs_done) {
    if (!c->started) return;
    handshake(c);
    if (c->closing) return;
    flush_side(c);
    if (c->closing) return;
    if (c->failed) {
      fail_now(c);
      return;
    }
    if (c->hs_done) {
      release_handshake_state(c);
      tlsnet_emit(c, EV_HANDSHAKE, 0, NULL);
    }
    return; /* JS starts reading (readStart) once it has checked the peer */
  }
  if (c->wq_head != NULL) flush_writes(c);
  if (!c->failed && c->want_end && !c->fin_sent && c->wq_head == NULL) do_end(c);
  if (c->failed) {
    fail_now(c);
    return;
  }
  do_reads(c);
  if (c->closing) return;
  if (c->failed) {
    fail_now(c);
    return;
  }
  flush_side(c);
  if (c->closing) return;
  if (c->drain_pending) {
    c->drain_pending = 0;
    tlsnet_emit(c, EV_DRAIN, 0, NULL);
    if (c->closing) return;
  }
  if (c->finished_pending) {
    c->finished_pending = 0;
    tlsnet_emit(c, EV_FINISHED, 0, NULL);
  }
}

/* The socket's pending error (SO_ERROR, which reading clears) as the conn's failure: 1 if any. */
static int take_socket_error(conn_t* c) {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr == 0) return 0;
  c->sys_errno = soerr;
  tlsnet_set_sys_error(c);
  c->failed = 1;
  return 1;
}

static void on_poll(uv_poll_t* h, int status, int events) {
  conn_t* c = uv_handle_get_data((uv_handle_t*)h);
  if (c->closing) return;
  napi_env env = c->addon->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  c->kick = 0;
  if (status < 0 || (events & UV_READABLE)) c->drained = 0;
  if (status < 0) c->armed = 0; /* libuv stopped the poll (POLLERR) */
  c->stepping = 1;
  tlsnet_cork(c);
  /* Even after POLLERR, what arrived before the error is read first, as read() serves it
     before the error: a peer's alert, then the reset of its close. */
  step(c);
  /* JS asked for more while step() ran: the microtasks of our own events run inside it, so
     readStart() after the handshake and end() at EOF come from there. Do it now, rather than
     arm the poll for writable to be called back (uv_poll_start deletes and re-adds the fd:
     two epoll_ctl calls each way). Bounded: a conn that keeps asking waits for the loop. */
  for (int round = 0; c->kick && !c->closing && round < 4; round++) {
    c->kick = 0;
    step(c);
  }
  if (status < 0 && !c->closing && !c->failed && take_socket_error(c)) step(c);
  c->stepping = 0;
  if (tlsnet_uncork(c) < 0 && !c->closing && !c->failed) {
    tlsnet_set_sys_error(c);
    c->failed = 1; /* reported from the next turn (update_poll asks for one) */
  }
  update_poll(c);
  napi_close_handle_scope(env, scope);
}

static void update_poll(conn_t* c) {
  if (c->closing || c->poll == NULL) return;
  int ev = 0;
  if (c->started && !c->failed) {
    if (!c->hs_done) {
      ev |= c->hs_want_write ? UV_WRITABLE : UV_READABLE;
    } else {
      if (((c->reading || c->discard) && !c->eof) || c->write_wants_read) ev |= UV_READABLE;
      if ((c->wq_head != NULL && !c->write_wants_read) || c->end_wants_write ||
          c->read_wants_write || c->out_off < c->out_len) {
        ev |= UV_WRITABLE;
      }
    }
  }
  if (c->kick || c->failed) ev |= UV_WRITABLE | UV_READABLE;
  if (ev == c->armed) return;
  if (ev == 0) uv_poll_stop(c->poll);
  else uv_poll_start(c->poll, ev, on_poll);
  c->armed = ev;
}

/* Run step() from the loop soon (after a call from JS changed what there is to do). */
static void kick(conn_t* c) {
  c->kick = 1;
  if (!c->stepping) update_poll(c); /* inside on_poll, it runs step() again itself */
}

/* ------------------------------------------------------------- JS methods */

static conn_t* unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  napi_value self;
  void* p = NULL;
  napi_get_cb_info(env, info, argc, argv, &self, NULL);
  if (napi_unwrap(env, self, &p) != napi_ok || p == NULL) {
    tlsnet_throw(env, "ERR_TLSNET_NATIVE", "not a native TLS conn");
    return NULL;
  }
  return p;
}

static napi_value number(napi_env env, double n) {
  napi_value v;
  napi_create_double(env, n, &v);
  return v;
}

static int bytes_of(napi_env env, napi_value v, uint8_t** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type t;
    napi_value ab;
    size_t off;
    if (napi_get_typedarray_info(env, v, &t, len, (void**)data, &ab, &off) != napi_ok) return 0;
    return t == napi_uint8_array;
  }
  return 0;
}

/* new Conn(fd, ctx, server, receiver, pre?, servername?, session?, sni) */
static napi_value conn_new(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8], self;
  addon_t* a;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  napi_get_instance_data(env, (void**)&a);
  int32_t fd = -1;
  bool server = false, sni = false;
  napi_get_value_int32(env, argv[0], &fd);
  SSL_CTX* ctx = tlsnet_unwrap_context(env, argv[1]);
  napi_get_value_bool(env, argv[2], &server);
  napi_get_value_bool(env, argv[7], &sni);
  if (ctx == NULL || fd < 0) return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "bad fd or context");

  conn_t* c = calloc(1, sizeof *c);
  if (c == NULL) return tlsnet_throw(env, "ENOMEM", "out of memory");
  c->addon = a;
  a->conns++;
  c->server = server;
  c->sni = sni;
  c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (c->fd < 0) {
    int e = errno;
    conn_free(c);
    return tlsnet_throw(env, uv_err_name(-e), strerror(e));
  }
  ERR_clear_error();
  c->ssl = SSL_new(ctx);
  BIO* bio = c->ssl != NULL ? tlsnet_bio_new(c) : NULL;
  if (bio == NULL) goto ssl_failed;
  SSL_set_bio(c->ssl, bio, bio);
  SSL_set_ex_data(c->ssl, tlsnet_conn_index, c);
  if (server) {
    SSL_set_accept_state(c->ssl);
  } else {
    SSL_set_connect_state(c->ssl);
    napi_valuetype t;
    napi_typeof(env, argv[5], &t);
    if (t == napi_string) {
      char name[256];
      size_t n;
      napi_get_value_string_utf8(env, argv[5], name, sizeof name, &n);
      if (!SSL_set_tlsext_host_name(c->ssl, name)) goto ssl_failed;
    }
    bool is_buffer = false;
    if (napi_is_buffer(env, argv[6], &is_buffer) == napi_ok && is_buffer) {
      void* p;
      size_t n;
      napi_get_buffer_info(env, argv[6], &p, &n);
      const unsigned char* q = p;
      SSL_SESSION* sess = d2i_SSL_SESSION(NULL, &q, (long)n);
      if (sess != NULL) {
        SSL_set_session(c->ssl, sess);
        SSL_SESSION_free(sess);
      }
      ERR_clear_error(); /* a stale session is no reason to fail: full handshake */
    }
  }
  uint8_t* pre;
  size_t pre_len;
  if (bytes_of(env, argv[4], &pre, &pre_len) && pre_len > 0) {
    c->pre = malloc(pre_len);
    if (c->pre == NULL) goto ssl_failed;
    memcpy(c->pre, pre, pre_len);
    c->pre_len = pre_len;
  }
  c->poll = malloc(uv_handle_size(TLSNET_UV_POLL));
  if (c->poll == NULL) goto ssl_failed;
  int r = uv_poll_init(a->loop, c->poll, c->fd);
  if (r != 0) {
    free(c->poll);
    SSL_free(c->ssl);
    close(c->fd);
    conn_free(c);
    return tlsnet_throw(env, uv_err_name(r), uv_strerror(r));
  }
  uv_handle_set_data((uv_handle_t*)c->poll, c);
  napi_value name;
  napi_create_string_utf8(env, "tlsnet:native", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[3], 1, &c->receiver);
  napi_async_init(env, argv[3], name, &c->actx);
  napi_wrap(env, self, c, conn_finalize, NULL, NULL);
  return self;

ssl_failed: {
  char code[112], text[200];
  tlsnet_ssl_error_text(code, sizeof code, text, sizeof text);
  if (c->ssl != NULL) SSL_free(c->ssl);
  close(c->fd);
  conn_free(c);
  return tlsnet_throw(env, code, text);
}
}

static napi_value m_start(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing) return NULL;
  c->started = 1;
  /* A server waits for the ClientHello: the poll for readable is all it needs. */
  if (c->server && c->pre == NULL) update_poll(c);
  else kick(c);
  return NULL;
}

static napi_value m_write(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  conn_t* c = unwrap(env, info, &argc, argv);
  if (c == NULL) return NULL;
  uint8_t* data;
  size_t len;
  if (!bytes_of(env, argv[0], &data, &len)) {
    return tlsnet_throw(env, "ERR_INVALID_ARG_TYPE", "write takes a Uint8Array");
  }
  if (!c->hs_done || c->closing || c->failed || c->want_end) return number(env, 0);
  if (submit(c, argv[0], data, len) < 0) fail_later(c);
  else if (c->wq_head != NULL) update_poll(c);
  return number(env, (double)c->wq_bytes);
}

/* writev(parts: Uint8Array[]): small parts are gathered into one buffer (fewer records). */
static napi_value m_writev(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arr;
  conn_t* c = unwrap(env, info, &argc, &arr);
  if (c == NULL) return NULL;
  if (!c->hs_done || c->closing || c->failed || c->want_end) return number(env, 0);
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    uint8_t* d;
    size_t len;
    napi_get_element(env, arr, i, &v);
    if (!bytes_of(env, v, &d, &len)) {
      return tlsnet_throw(env, "ERR_INVALID_ARG_TYPE", "writev takes Uint8Arrays");
    }
    total += len;
  }
  int r = 0;
  if (total <= SCRATCH && c->wq_head == NULL) {
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
      napi_value v;
      uint8_t* d;
      size_t len;
      napi_get_element(env, arr, i, &v);
      bytes_of(env, v, &d, &len);
      if (len > 0) memcpy(scratch + off, d, len); /* an empty part may have no data pointer */
      off += len;
    }
    r = submit(c, NULL, scratch, total);
  } else {
    for (uint32_t i = 0; i < n && r == 0; i++) {
      napi_value v;
      uint8_t* d;
      size_t len;
      napi_get_element(env, arr, i, &v);
      bytes_of(env, v, &d, &len);
      r = submit(c, v, d, len);
    }
  }
  if (r < 0) fail_later(c);
  else if (c->wq_head != NULL) update_poll(c);
  return number(env, (double)c->wq_bytes);
}

/* end(): close_notify and FIN after what is queued; EV_FINISHED when done. */
static napi_value m_end(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing || c->want_end) return NULL;
  c->want_end = 1;
  if (c->hs_done) kick(c);
  return NULL;
}

static napi_value m_read_start(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing || c->reading) return NULL;
  c->reading = 1;
  kick(c); /* OpenSSL may hold records already: do not wait for the fd */
  return NULL;
}

static napi_value m_read_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing) return NULL;
  c->reading = 0;
  update_poll(c);
  return NULL;
}

/* discard(): read on, drop the plaintext, report only the end (a lingering close). */
static napi_value m_discard(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing) return NULL;
  c->discard = 1;
  c->reading = 0;
  kick(c);
  return NULL;
}

static napi_value m_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c != NULL) start_close(c);
  return NULL;
}

/* unref(): do not keep the process alive for this conn (a lingering close). */
static napi_value m_unref(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing || c->unref) return NULL;
  c->unref = 1;
  uv_unref((uv_handle_t*)c->poll);
  return NULL;
}

/* setNoDelay(on): TCP_NODELAY on the conn's socket (node:net no longer holds an fd for it). */
static napi_value m_set_no_delay(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  conn_t* c = unwrap(env, info, &argc, argv);
  bool on = true;
  if (c == NULL || c->fd < 0) return NULL;
  napi_get_value_bool(env, argv[0], &on);
  int v = on ? 1 : 0;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
  return NULL;
}

/* setKeepAlive(on, idleSeconds): SO_KEEPALIVE, and TCP_KEEPIDLE when given (as libuv does). */
static napi_value m_set_keep_alive(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  conn_t* c = unwrap(env, info, &argc, argv);
  bool on = false;
  int32_t idle = 0;
  if (c == NULL || c->fd < 0) return NULL;
  napi_get_value_bool(env, argv[0], &on);
  napi_get_value_int32(env, argv[1], &idle);
  int v = on ? 1 : 0;
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
  if (on && idle > 0) setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  return NULL;
}

/* ref(): keep the process alive for this conn again (toSocket()'s owner: undici refs a
 * pooled socket for its next request). */
static napi_value m_ref(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->closing || !c->unref) return NULL;
  c->unref = 0;
  uv_ref((uv_handle_t*)c->poll);
  return NULL;
}

/* setContext(ctx): during EV_SNI only. */
static napi_value m_set_context(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value v;
  conn_t* c = unwrap(env, info, &argc, &v);
  if (c == NULL) return NULL;
  SSL_CTX* ctx = tlsnet_unwrap_context(env, v);
  if (ctx == NULL || c->ssl == NULL || c->hs_done) {
    return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "setContext: no context or not in SNI");
  }
  SSL_set_SSL_CTX(c->ssl, ctx);
  return NULL;
}

static napi_value m_info(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->ssl == NULL) return NULL;
  return tlsnet_conn_info(env, c);
}

/* checkHost(name, isIp): does the peer's leaf certificate cover it? */
static napi_value m_check_host(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  conn_t* c = unwrap(env, info, &argc, argv);
  if (c == NULL) return NULL;
  char name[512];
  size_t n;
  bool ip = false;
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &n);
  napi_get_value_bool(env, argv[1], &ip);
  napi_value v;
  napi_get_boolean(env, c->ssl != NULL && n < sizeof name - 1 && tlsnet_check_host(c, name, ip),
                   &v);
  return v;
}

/* offeredAlpn(): server, the client's ALPN list (wire format), or undefined. */
static napi_value m_offered_alpn(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  conn_t* c = unwrap(env, info, &argc, NULL);
  if (c == NULL || c->offered_alpn == NULL) return NULL;
  napi_value v;
  void* p;
  napi_create_buffer_copy(env, c->offered_alpn_len, c->offered_alpn, &p, &v);
  return v;
}

napi_value tlsnet_define_conn(napi_env env, addon_t* a) {
  napi_property_descriptor methods[] = {
      {"start", NULL, m_start, NULL, NULL, NULL, napi_default, NULL},
      {"write", NULL, m_write, NULL, NULL, NULL, napi_default, NULL},
      {"writev", NULL, m_writev, NULL, NULL, NULL, napi_default, NULL},
      {"end", NULL, m_end, NULL, NULL, NULL, napi_default, NULL},
      {"readStart", NULL, m_read_start, NULL, NULL, NULL, napi_default, NULL},
      {"readStop", NULL, m_read_stop, NULL, NULL, NULL, napi_default, NULL},
      {"discard", NULL, m_discard, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, m_close, NULL, NULL, NULL, napi_default, NULL},
      {"unref", NULL, m_unref, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, m_ref, NULL, NULL, NULL, napi_default, NULL},
      {"setNoDelay", NULL, m_set_no_delay, NULL, NULL, NULL, napi_default, NULL},
      {"setKeepAlive", NULL, m_set_keep_alive, NULL, NULL, NULL, napi_default, NULL},
      {"setContext", NULL, m_set_context, NULL, NULL, NULL, napi_default, NULL},
      {"info", NULL, m_info, NULL, NULL, NULL, napi_default, NULL},
      {"checkHost", NULL, m_check_host, NULL, NULL, NULL, napi_default, NULL},
      {"offeredAlpn", NULL, m_offered_alpn, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  napi_define_class(env, "Conn", NAPI_AUTO_LENGTH, conn_new, NULL,
                    sizeof methods / sizeof methods[0], methods, &cls);
  napi_create_reference(env, cls, 1, &a->conn_ctor);
  return cls;
}
