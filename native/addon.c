/*
 * Module entry: per-environment state, the JS dispatch of events, the decrypt
 * slab, and the exports (setup, newContext, setRoots, Conn, opensslVersion,
 * selfCheck).
 */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "tlsnet.h"

/*
 * Node unloads (dlclose) an addon when a worker thread that loaded it ends, but the
 * close callbacks of the conns that worker still had open run after that, from the
 * worker's last loop turn: into unmapped code. Pin this library for the process's life.
 */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void*)&pin_library, &info) != 0 && info.dli_fname != NULL) {
    void* self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    (void)self; /* never closed: that is the point */
  }
}

napi_value tlsnet_throw(napi_env env, const char* code, const char* msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

/*
 * fn.call(receiver, type, ...argv) through napi_make_callback, so that the
 * microtasks the callback queues run when it returns. A throw there is an
 * uncaught exception of the process, as with any event handler.
 */
void tlsnet_emit(conn_t* c, int type, size_t argc, napi_value* argv) {
  addon_t* a = c->addon;
  napi_env env = a->env;
  napi_value recv, fn, args[5], result;
  if (c->receiver == NULL || argc > 4 || a->teardown) return;
  napi_get_reference_value(env, c->receiver, &recv);
  napi_get_reference_value(env, a->dispatch, &fn);
  napi_create_int32(env, type, &args[0]);
  for (size_t i = 0; i < argc; i++) args[i + 1] = argv[i];
  napi_status s = napi_make_callback(env, c->actx, recv, fn, argc + 1, args, &result);
  if (s == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
}

/* A slab with at least min_room bytes free, from JS (an untransferable ArrayBuffer). */
int tlsnet_ensure_slab(addon_t* a, size_t min_room) {
  if (a->slab != NULL && a->slab_size - a->slab_off >= min_room) return 1;
  napi_env env = a->env;
  napi_value fn, global, ab;
  void* data;
  size_t len;
  napi_get_reference_value(env, a->new_slab, &fn);
  napi_get_global(env, &global);
  if (napi_call_function(env, global, fn, 0, NULL, &ab) != napi_ok) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    return 0;
  }
  if (napi_get_arraybuffer_info(env, ab, &data, &len) != napi_ok || len < min_room) return 0;
  if (a->slab != NULL) napi_delete_reference(env, a->slab);
  napi_create_reference(env, ab, 1, &a->slab);
  a->slab_data = data;
  a->slab_size = len;
  a->slab_off = 0;
  return 1;
}

/* setup(dispatch, newSlab) */
static napi_value setup(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  addon_t* a;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_instance_data(env, (void**)&a);
  if (a->dispatch != NULL) napi_delete_reference(env, a->dispatch);
  if (a->new_slab != NULL) napi_delete_reference(env, a->new_slab);
  napi_create_reference(env, argv[0], 1, &a->dispatch);
  napi_create_reference(env, argv[1], 1, &a->new_slab);
  return NULL;
}

/* opensslVersion(): [version text, version number] of the OpenSSL this process runs. */
static napi_value openssl_version(napi_env env, napi_callback_info info) {
  (void)info;
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method()); /* proves libssl is there and works */
  if (ctx == NULL) return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "SSL_CTX_new failed");
  SSL_CTX_free(ctx);
  napi_value arr, v;
  napi_create_array(env, &arr);
  napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_double(env, (double)OpenSSL_version_num(), &v);
  napi_set_element(env, arr, 1, v);
  return arr;
}

/* mallinfo(): [in use, free in the arenas, mmapped, arena size] bytes of this process's malloc
 * (glibc mallinfo2), for diagnosing memory per conn (scripts/memory-probe.ts); undefined
 * elsewhere. Diagnostics only: not part of the engine. */
static napi_value debug_mallinfo(napi_env env, napi_callback_info info) {
  (void)info;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 m = mallinfo2();
  double v[4] = {(double)m.uordblks, (double)m.fordblks, (double)m.hblkhd, (double)m.arena};
  napi_value arr, x;
  napi_create_array_with_length(env, 4, &arr);
  for (uint32_t i = 0; i < 4; i++) {
    napi_create_double(env, v[i], &x);
    napi_set_element(env, arr, i, x);
  }
  return arr;
#else
  (void)env;
  return NULL;
#endif
}

/* Runs first when the environment goes away (worker exit, process exit): from here on,
 * closing conns must not call into JS, which V8 no longer allows. */
static void addon_teardown(void* data) {
  ((addon_t*)data)->teardown = 1;
}

static void addon_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  addon_t* a = data;
  if (a->dispatch != NULL) napi_delete_reference(env, a->dispatch);
  if (a->new_slab != NULL) napi_delete_reference(env, a->new_slab);
  if (a->slab != NULL) napi_delete_reference(env, a->slab);
  if (a->conn_ctor != NULL) napi_delete_reference(env, a->conn_ctor);
  if (a->roots != NULL) X509_STORE_free(a->roots);
  a->dispatch = a->new_slab = a->slab = a->conn_ctor = NULL;
  a->roots = NULL;
  a->teardown = 1;
  a->released = 1;
  if (a->conns == 0) free(a); /* else the last conn_free does */
}

/* A conn was freed: the addon struct goes with the last one once the environment let go. */
void tlsnet_addon_conn_gone(addon_t* a) {
  a->conns--;
  if (a->released && a->conns == 0) free(a);
}

NAPI_MODULE_INIT() {
  pin_library();
  addon_t* a = calloc(1, sizeof *a);
  if (a == NULL) return NULL;
  a->env = env;
  if (napi_get_uv_event_loop(env, (struct uv_loop_s**)&a->loop) != napi_ok) {
    free(a);
    return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "no event loop");
  }
  if (!tlsnet_context_init()) {
    free(a);
    return tlsnet_throw(env, "ERR_TLSNET_NATIVE", "OpenSSL ex data indices unavailable");
  }
  napi_set_instance_data(env, a, addon_finalize, NULL);
  napi_add_env_cleanup_hook(env, addon_teardown, a);
  napi_property_descriptor props[] = {
      {"setup", NULL, setup, NULL, NULL, NULL, napi_default, NULL},
      {"newContext", NULL, tlsnet_new_context, NULL, NULL, NULL, napi_default, NULL},
      {"setRoots", NULL, tlsnet_set_roots, NULL, NULL, NULL, napi_default, NULL},
      {"opensslVersion", NULL, openssl_version, NULL, NULL, NULL, napi_default, NULL},
      {"allocSlab", NULL, tlsnet_alloc_slab, NULL, NULL, NULL, napi_default, NULL},
      {"selfCheck", NULL, tlsnet_self_check, NULL, NULL, NULL, napi_default, NULL},
      {"debugMallinfo", NULL, debug_mallinfo, NULL, NULL, NULL, napi_default, NULL},
      {"Conn", NULL, NULL, NULL, NULL, tlsnet_define_conn(env, a), napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
