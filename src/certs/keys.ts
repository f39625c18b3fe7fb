/**
 * Key generation for the dev certificates, with node:crypto.
 */

import { createPrivateKey, generateKeyPair as generate, type KeyObject } from "node:crypto";
import { promisify } from "node:util";

/** The key algorithms `tlsnet/certs` can generate. */
export type KeyType = "ec-p256" | "rsa-2048" | "ed25519";

/** Every valid {@link KeyType}, in the order error messages list them. */
export const KEY_TYPES: readonly KeyType[] = ["ec-p256", "rsa-2048", "ed25519"];

/** A private key and its public half. */
export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

const generateAsync = promisify(generate);

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

/** Generates a key pair of the given type. */
export async function generateKeyPair(type: KeyType): Promise<KeyPair> {
  switch (type) {
    case "ec-p256":
      return generateAsync("ec", { namedCurve: "P-256" });
    case "rsa-2048":
      return generateAsync("rsa", { modulusLength: 2048, publicExponent: 0x10001 });
    case "ed25519":
      return generateAsync("ed25519");
  }
}

/** A private key as PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"), ending with a newline. */
export function exportPkcs8Pem(key: KeyObject): string {
  const pem = key.export({ type: "pkcs8", format: "pem" }).toString();
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}

/**
 * Imports a PEM private key (PKCS#8 or traditional) for signing, with its key type. The public
 * half comes from the certificate it belongs to.
 */
export function importKeyPair(
  keyPem: string,
  publicKey: KeyObject,
): { keys: KeyPair; keyType: KeyType } {
  const privateKey = createPrivateKey(keyPem);
  const keyType = keyTypeOf(privateKey.asymmetricKeyType, privateKey.asymmetricKeyDetails);
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
