/**
 * Key generation for the dev certificates, on Node's WebCrypto.
 */

import { webcrypto } from "node:crypto";

/** The key algorithms `tlsnet/certs` can generate. */
export type KeyType = "ec-p256" | "rsa-2048" | "ed25519";

/** Every valid {@link KeyType}, in the order error messages list them. */
export const KEY_TYPES: readonly KeyType[] = ["ec-p256", "rsa-2048", "ed25519"];

/** Node's WebCrypto, the provider `@peculiar/x509` signs and hashes with. */
export const webCrypto: webcrypto.Crypto = webcrypto;

// The project compiles without the DOM lib, so WebCrypto types come from node:crypto.
export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Algorithm = webcrypto.Algorithm;

interface KeySpec {
  /** Parameters for `subtle.generateKey`. */
  readonly generate: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | Algorithm;
  /** Parameters for signing certificates with a key of this type. */
  readonly sign: webcrypto.RsaHashedImportParams | webcrypto.EcdsaParams | Algorithm;
}

const SPECS: Record<KeyType, KeySpec> = {
  "ec-p256": {
    generate: { name: "ECDSA", namedCurve: "P-256" },
    sign: { name: "ECDSA", hash: "SHA-256" },
  },
  "rsa-2048": {
    generate: {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    sign: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  },
  ed25519: { generate: { name: "Ed25519" }, sign: { name: "Ed25519" } },
};

/** Checks an optional `keyType` argument; `undefined` means the default, "ec-p256". */
export function parseKeyType(value: unknown, argName: string): KeyType {
  if (value === undefined) return "ec-p256";
  if (typeof value === "string" && (KEY_TYPES as readonly string[]).includes(value)) {
    return value as KeyType;
  }
  throw new RangeError(
    `${argName} must be one of ${KEY_TYPES.map((t) => `"${t}"`).join(", ")}; got ${String(value)}`,
  );
}

/** Generates an extractable key pair (extractable so the private key can be exported as PEM). */
export async function generateKeyPair(type: KeyType): Promise<CryptoKeyPair> {
  const keys = await webCrypto.subtle.generateKey(SPECS[type].generate, true, ["sign", "verify"]);
  return keys as CryptoKeyPair;
}

/** The signature algorithm a CA with a key of this type signs with. */
export function signingAlgorithm(type: KeyType): Algorithm {
  return SPECS[type].sign;
}

/** Exports a private key as PKCS#8 DER ("-----BEGIN PRIVATE KEY-----" once PEM-wrapped). */
export function exportPkcs8(key: CryptoKey): Promise<ArrayBuffer> {
  return webCrypto.subtle.exportKey("pkcs8", key);
}

/**
 * Imports a PEM private key (PKCS#8 or traditional) as a WebCrypto key pair for signing,
 * with its key type. The public half comes from the certificate it belongs to.
 */
export async function importKeyPair(
  keyPem: string,
  publicKey: CryptoKey,
): Promise<{ keys: CryptoKeyPair; keyType: KeyType }> {
  const { createPrivateKey } = await import("node:crypto");
  const key = createPrivateKey(keyPem);
  const keyType = keyTypeOf(key.asymmetricKeyType, key.asymmetricKeyDetails);
  const der = key.export({ format: "der", type: "pkcs8" });
  // The generate parameters carry what import needs (the curve, the hash); extra members are ignored.
  const privateKey = await webCrypto.subtle.importKey("pkcs8", der, SPECS[keyType].generate, true, [
    "sign",
  ]);
  return { keys: { privateKey, publicKey }, keyType };
}

function keyTypeOf(
  type: string | undefined,
  details: { namedCurve?: string; modulusLength?: number } | undefined,
): KeyType {
  if (type === "ec" && details?.namedCurve === "prime256v1") return "ec-p256";
  if (type === "rsa" && details?.modulusLength === 2048) return "rsa-2048";
  if (type === "ed25519") return "ed25519";
  throw new RangeError(
    `loadCA: key type ${type}${details?.namedCurve ? ` (${details.namedCurve})` : ""}` +
      `${details?.modulusLength ? ` (${details.modulusLength} bits)` : ""} is not one of ${KEY_TYPES.join(", ")}`,
  );
}
