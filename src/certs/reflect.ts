/**
 * A minimal `Reflect` metadata shim, installed only when no polyfill is present.
 *
 * Why: `@peculiar/x509` (v2) pulls in tsyringe, which throws at load time unless
 * `Reflect.getMetadata` exists ("tsyringe requires a reflect polyfill"). The library expects the
 * application to import `reflect-metadata` first; a dev-cert helper should not impose that on its
 * users, and tsyringe only stores and reads a little decorator metadata, which this covers.
 *
 * It implements the method set that `reflect-metadata` 0.2 looks for when it finds an existing
 * polyfill, so an application that loads the real one later still works. When a polyfill is
 * already installed this module does nothing.
 *
 * This module must be imported before `@peculiar/x509`.
 */

type PropertyKey = string | symbol | undefined;
type MetadataMap = Map<unknown, unknown>;

const store = new WeakMap<object, Map<PropertyKey, MetadataMap>>();

function ownMap(target: object, property: PropertyKey, create: boolean): MetadataMap | undefined {
  let byProperty = store.get(target);
  if (!byProperty) {
    if (!create) return undefined;
    byProperty = new Map();
    store.set(target, byProperty);
  }
  let map = byProperty.get(property);
  if (!map && create) {
    map = new Map();
    byProperty.set(property, map);
  }
  return map;
}

/** Walks `target` and its prototype chain, like `reflect-metadata`'s non-"own" lookups. */
function* protoChain(target: object): Generator<object> {
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o)) yield o;
}

const shim = {
  defineMetadata(key: unknown, value: unknown, target: object, property?: PropertyKey): void {
    ownMap(target, property, true)!.set(key, value);
  },
  hasOwnMetadata(key: unknown, target: object, property?: PropertyKey): boolean {
    return ownMap(target, property, false)?.has(key) ?? false;
  },
  getOwnMetadata(key: unknown, target: object, property?: PropertyKey): unknown {
    return ownMap(target, property, false)?.get(key);
  },
  getOwnMetadataKeys(target: object, property?: PropertyKey): unknown[] {
    return [...(ownMap(target, property, false)?.keys() ?? [])];
  },
  deleteMetadata(key: unknown, target: object, property?: PropertyKey): boolean {
    return ownMap(target, property, false)?.delete(key) ?? false;
  },
  hasMetadata(key: unknown, target: object, property?: PropertyKey): boolean {
    for (const o of protoChain(target)) if (shim.hasOwnMetadata(key, o, property)) return true;
    return false;
  },
  getMetadata(key: unknown, target: object, property?: PropertyKey): unknown {
    for (const o of protoChain(target)) {
      const map = ownMap(o, property, false);
      if (map?.has(key)) return map.get(key);
    }
    return undefined;
  },
  getMetadataKeys(target: object, property?: PropertyKey): unknown[] {
    const keys = new Set<unknown>();
    for (const o of protoChain(target)) {
      for (const k of shim.getOwnMetadataKeys(o, property)) keys.add(k);
    }
    return [...keys];
  },
  /** Decorator factory; TypeScript's emitted `__metadata` helper calls it when present. */
  metadata(key: unknown, value: unknown) {
    return (target: object, property?: PropertyKey): void =>
      shim.defineMetadata(key, value, target, property);
  },
};

const reflect = Reflect as unknown as Record<string, unknown>;
if (typeof reflect.getMetadata !== "function") {
  for (const [name, fn] of Object.entries(shim)) {
    // Writable and configurable, so a real polyfill loaded later can take over.
    Object.defineProperty(Reflect, name, { value: fn, writable: true, configurable: true });
  }
}
