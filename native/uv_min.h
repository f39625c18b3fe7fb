/*
 * The few libuv calls the addon makes, declared by hand so that the build needs
 * only the N-API headers (npm package node-api-headers) and OpenSSL's headers.
 * libuv keeps its ABI within 1.x; these declarations use no struct layout at
 * all (handles are allocated with uv_handle_size, their data reached through
 * uv_handle_get_data / uv_handle_set_data). With -DTLSNET_UV_H the real uv.h
 * is used instead and the constants below are checked against it.
 */
#ifndef TLSNET_UV_MIN_H
#define TLSNET_UV_MIN_H

#include <stddef.h>

#ifdef TLSNET_UV_H
#include <uv.h>
_Static_assert(UV_POLL == 8, "libuv handle type UV_POLL");
_Static_assert(UV_READABLE == 1 && UV_WRITABLE == 2, "libuv poll events");
#define TLSNET_UV_POLL UV_POLL
#else
typedef struct uv_loop_s uv_loop_t;
typedef struct uv_handle_s uv_handle_t;
typedef struct uv_poll_s uv_poll_t;
typedef void (*uv_poll_cb)(uv_poll_t* handle, int status, int events);
typedef void (*uv_close_cb)(uv_handle_t* handle);
enum { UV_READABLE = 1, UV_WRITABLE = 2 };
#define TLSNET_UV_POLL 8 /* UV_POLL in uv_handle_type */

size_t uv_handle_size(int type);
void* uv_handle_get_data(const uv_handle_t* handle);
void uv_handle_set_data(uv_handle_t* handle, void* data);
int uv_poll_init(uv_loop_t* loop, uv_poll_t* handle, int fd);
int uv_poll_start(uv_poll_t* handle, int events, uv_poll_cb cb);
int uv_poll_stop(uv_poll_t* handle);
void uv_close(uv_handle_t* handle, uv_close_cb close_cb);
void uv_ref(uv_handle_t* handle);
void uv_unref(uv_handle_t* handle);
void uv_ref(uv_handle_t* handle);
const char* uv_err_name(int err);
const char* uv_strerror(int err);
#endif

#endif
