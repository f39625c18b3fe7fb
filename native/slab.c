/*
 * Slabs: the memory plaintext is decrypted into, handed to JS as ArrayBuffers
 * whose views are the chunks the Conn keeps. Fresh memory for every slab
 * would cost more than the decryption (the kernel zeroes and maps every new
 * page: first-touch page faults), so a slab whose last view was collected
 * comes back here and is reused while its pages are warm. Node runs external
 * ArrayBuffer finalizers on the JS thread; the lock is for worker threads,
 * which share this list.
 */
#include <pthread.h>
#include <stdlib.h>

#include "tlsnet.h"

#define SLAB_KEEP 32 /* warm slabs kept at most: 8 MiB */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void* free_slabs[SLAB_KEEP];
static int free_count;

static void slab_release(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  pthread_mutex_lock(&lock);
  if (free_count < SLAB_KEEP) {
    free_slabs[free_count++] = data;
    data = NULL;
  }
  pthread_mutex_unlock(&lock);
  free(data);
}

/* allocSlab(): an ArrayBuffer of TLSNET_SLAB_SIZE bytes, warm when one is free. */
napi_value tlsnet_alloc_slab(napi_env env, napi_callback_info info) {
  (void)info;
  void* p = NULL;
  pthread_mutex_lock(&lock);
  if (free_count > 0) p = free_slabs[--free_count];
  pthread_mutex_unlock(&lock);
  if (p == NULL) p = malloc(TLSNET_SLAB_SIZE);
  if (p == NULL) return tlsnet_throw(env, "ENOMEM", "cannot allocate a slab");
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, TLSNET_SLAB_SIZE, slab_release, NULL, &ab) ==
      napi_ok) {
    return ab;
  }
  /* Runtimes that forbid external buffers (V8 sandbox): plain ArrayBuffers. */
  slab_release(env, p, NULL);
  napi_value exc;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_get_and_clear_last_exception(env, &exc);
  }
  if (napi_create_arraybuffer(env, TLSNET_SLAB_SIZE, &p, &ab) != napi_ok) return NULL;
  return ab;
}
