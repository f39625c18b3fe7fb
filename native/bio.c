/*
 * A BIO over the conn's fd: recv/send straight on the socket (MSG_NOSIGNAL, so
 * a write into a reset connection is EPIPE, not SIGPIPE), serving first the
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

static int bio_write(BIO* b, const char* in, int len) {
  conn_t* c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
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
