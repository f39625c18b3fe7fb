/*
 * Slabs: the memory plaintext is decrypted into, handed to JS as ArrayBuffers
 * whose views are the chunks the Conn keeps. They are plain V8 ArrayBuffers,
 * not external ones: V8 frees a young one in a minor GC once its last view is
 * gone. An external ArrayBuffer with a finalizer (what slabs were first, to
 * reuse their warm pages from a pool) counted as external memory, and V8 runs
 * full mark-compacts to reclaim that: receiving bulk data at ~1.5 GB/s spent
 * ~17 % of the server's CPU in major GC, against ~0.3 % for node:tls. 64 KiB
 * (four full TLS records) stays below glibc's mmap threshold, so the memory
 * comes from malloc's warm free lists rather than fresh pages.
 */
#include "tlsnet.h"

/* allocSlab(): a zero-filled ArrayBuffer of TLSNET_SLAB_SIZE bytes. */
napi_value tlsnet_alloc_slab(napi_env env, napi_callback_info info) {
  (void)info;
  void* data;
  napi_value ab;
  if (napi_create_arraybuffer(env, TLSNET_SLAB_SIZE, &data, &ab) != napi_ok) {
    return tlsnet_throw(env, "ENOMEM", "cannot allocate a slab");
  }
  return ab;
}
