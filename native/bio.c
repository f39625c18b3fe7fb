/*
 * A BIO over the conn's fd: recv/send straight on the socket (MSG_NOSIGNAL, so
 * a write into a reset connection is EPIPE, not SIGPIPE; corked while on_poll
 * runs, below), serving first the
 * bytes that node:net had already read before the hand-over. The errno of a
 * failed call is kept on the conn, so an SSL_ERROR_SYSCALL can name it. A
 * short read marks the socket drained until the poll reports it readable
 * again: the read that would only say EAGAIN is not made.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tlsnet.h"

static BIO_METHOD* method;

static int bio_read(BIO* b, char* out, int len) {
  conn_t* c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  if (c->pre != NULL) {
    size_t left = c->pre_len - c->pre_off;
    size_t n = left < (size_t)len ? left : (size_t)len;
    memcpy(out, c->pre + c->pre_off, n);
    c->pre_off += n;
    if (c->pre_off == c->pre_len) {
      free(c->pre);
      c->pre = NULL;
    }
    return (int)n;
  }
  if (c->drained) {
    BIO_set_retry_read(b);
    return -1;
  }
  ssize_t n;
  do n = recv(c->fd, out, (size_t)len, 0);
  while (n < 0 && errno == EINTR);
  if (n > 0 && n < len) c->drained = 1;
  if (n >= 0) return (int)n; /* 0: the peer's FIN */
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    c->drained = 1;
    BIO_set_retry_read(b);
    return -1;
  }
  c->sys_errno = errno;
  return -1;
}

/*
 * Output corking. While on_poll runs a conn's step(), what OpenSSL writes for it collects in
 * one buffer and goes out in one send when on_poll is done (tlsnet_uncork): a TLS 1.3 server's
 * two session tickets and its first reply leave as one segment, not three, which saves the
 * sends and, on loopback, the receiving side's work that each send does at once. One buffer
 * per thread: one conn at a time is inside on_poll. What the kernel does not take waits in the
 * conn's own `out` (malloc'd only then), before anything written later.
 */
#define CORK_MAX (16 * 1024)
static _Thread_local uint8_t cork[CORK_MAX];
static _Thread_local size_t cork_len;
static _Thread_local conn_t* cork_conn;

void tlsnet_cork(conn_t* c) {
  cork_conn = c;
  cork_len = 0;
}

/* All of p[0..len) with send(): 0 sent, 1 the kernel is full (*sent taken), -1 failed. */
static int send_some(conn_t* c, const uint8_t* p, size_t len, size_t* sent) {
  *sent = 0;
  while (*sent < len) {
    ssize_t n = send(c->fd, p + *sent, len - *sent, MSG_NOSIGNAL);
    if (n >= 0) {
      *sent += (size_t)n;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
    c->sys_errno = errno;
    return -1;
  }
  return 0;
}

/* Keep bytes the kernel did not take, after those already kept. 0: out of memory. */
static int keep(conn_t* c, const uint8_t* p, size_t len) {
  size_t left = c->out_len - c->out_off;
  uint8_t* q = malloc(left + len);
  if (q == NULL) return 0;
  if (left > 0) memcpy(q, c->out + c->out_off, left);
  memcpy(q + left, p, len);
  free(c->out);
  c->out = q;
  c->out_off = 0;
  c->out_len = left + len;
  return 1;
}

int tlsnet_flush_out(conn_t* c) {
  size_t sent;
  int r = 0;
  if (c->out_off < c->out_len) {
    r = send_some(c, c->out + c->out_off, c->out_len - c->out_off, &sent);
    c->out_off += sent;
    if (r == 0) {
      free(c->out);
      c->out = NULL;
      c->out_len = c->out_off = 0;
    }
  }
  if (cork_conn == c && cork_len > 0) {
    size_t from = 0;
    if (r == 0) {
      r = send_some(c, cork, cork_len, &sent);
      from = sent;
    }
    if (r > 0 && !keep(c, cork + from, cork_len - from)) {
      c->sys_errno = ENOMEM;
      r = -1;
    }
    cork_len = 0;
  }
  return r;
}

int tlsnet_uncork(conn_t* c) {
  int r = c->fd >= 0 ? tlsnet_flush_out(c) : 0;
  cork_conn = NULL;
  cork_len = 0;
  return r;
}

static int bio_write(BIO* b, const char* in, int len) {
  conn_t* c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  /* Corked only while nothing older waits: with the kernel full, writes wait in OpenSSL and
     the write queue (backpressure), and `out` never holds more than one cork's worth. */
  if (cork_conn == c && c->out_off == c->out_len && cork_len + (size_t)len <= CORK_MAX) {
    memcpy(cork + cork_len, in, (size_t)len);
    cork_len += (size_t)len;
    return len;
  }
  /* What waits goes first; this write waits behind it if the kernel is full. */
  int r = tlsnet_flush_out(c);
  if (r < 0) return -1;
  if (r > 0) {
    BIO_set_retry_write(b);
    return -1;
  }
  ssize_t n;
  do n = send(c->fd, in, (size_t)len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n >= 0) return (int)n;
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_write(b);
    return -1;
  }
  c->sys_errno = errno;
  return -1;
}

static long bio_ctrl(BIO* b, int cmd, long num, void* ptr) {
  (void)num;
  (void)ptr;
  conn_t* c = BIO_get_data(b);
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
      return c != NULL && c->pre != NULL ? (long)(c->pre_len - c->pre_off) : 0;
    default:
      return 0;
  }
}

static int bio_create(BIO* b) {
  BIO_set_init(b, 0);
  BIO_set_data(b, NULL);
  return 1;
}

static int bio_destroy(BIO* b) {
  BIO_set_data(b, NULL);
  BIO_set_init(b, 0);
  return 1;
}

/* Once per process (tlsnet_context_init). */
void tlsnet_bio_init(void) {
  BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsnet fd");
  if (m == NULL) return;
  BIO_meth_set_read(m, bio_read);
  BIO_meth_set_write(m, bio_write);
  BIO_meth_set_ctrl(m, bio_ctrl);
  BIO_meth_set_create(m, bio_create);
  BIO_meth_set_destroy(m, bio_destroy);
  method = m;
}

BIO* tlsnet_bio_new(conn_t* c) {
  if (method == NULL) return NULL;
  BIO* b = BIO_new(method);
  if (b == NULL) return NULL;
  BIO_set_data(b, c);
  BIO_set_init(b, 1);
  return b;
}
