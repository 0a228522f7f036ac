import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Upstream keys at rest (the library's templates carry them, as the Rust crate's do): with a
 * key-encryption key configured (`keyEncryptionKey`, or FUSILLADE_KEY_ENCRYPTION_KEY), a template's
 * key is stored as AES-256-GCM ciphertext, and only a process holding the same secret can send it.
 *
 * Stored form (versioned, so the scheme can change without guessing):
 *   fk1.<kid>.<iv>.<ciphertext>.<tag>     (base64url parts; `kid` names the secret, see keyId)
 * A fresh 96-bit IV per key; the 128-bit tag authenticates the ciphertext and the associated data
 * "fusillade upstream key v1", so a tampered value fails to decrypt instead of sending garbage.
 * Plain keys (no secret configured) are stored as given; they can never start with "fk1." (refused
 * at createFile when a secret is configured, see isEncryptedKey).
 */

const VERSION = 'fk1';
const AAD = Buffer.from('fusillade upstream key v1');

/** A key-encryption key ready for use: its 32 bytes and its id. */
export interface KeyEncryptionKey {
  readonly key: Buffer;
  /** Names the secret without revealing it (SHA-256 prefix): rows say which secret sealed them. */
  readonly id: string;
}

/**
 * Reads a secret: 32 random bytes given as 64 hex digits or as base64 (`openssl rand -base64 32`).
 * A passphrase is refused rather than stretched: the secret guards every stored upstream key.
 */
export function parseKeyEncryptionKey(secret: string): KeyEncryptionKey {
  const text = typeof secret === 'string' ? secret.trim() : '';
  let key: Buffer | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(text)) key = Buffer.from(text, 'hex');
  else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const decoded = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (decoded.length === 32) key = decoded;
  }
  if (key === null) {
    throw new TypeError(
      'the key-encryption key must be 32 random bytes as 64 hex digits or base64 (make one with: openssl rand -base64 32)',
    );
  }
  return { key, id: keyId(key) };
}

export function keyId(key: Buffer): string {
  return createHash('sha256')
    .update('fusillade key-encryption key id\0')
    .update(key)
    .digest('hex')
    .slice(0, 16);
}

/** Whether a stored key is ciphertext (of any secret). */
export function isEncryptedKey(stored: string): boolean {
  return stored.startsWith(`${VERSION}.`);
}

/** The id of the secret that sealed a stored key, or null for a plain key. */
export function encryptedKeyId(stored: string): string | null {
  if (!isEncryptedKey(stored)) return null;
  return stored.split('.')[1] ?? null;
}

export function encryptKey(plain: string, kek: KeyEncryptionKey): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek.key, iv);
  cipher.setAAD(AAD);
  const ciphertext = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  return [
    VERSION,
    kek.id,
    iv.toString('base64url'),
    ciphertext.toString('base64url'),
    tag.toString('base64url'),
  ].join('.');
}

/** Why a stored key cannot be opened with this secret (never the key itself). */
export class KeyDecryptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyDecryptionError';
  }
}

export function decryptKey(stored: string, kek: KeyEncryptionKey): string {
  const parts = stored.split('.');
  if (parts.length !== 5 || parts[0] !== VERSION) {
    throw new KeyDecryptionError('the stored upstream key is not in a known encrypted form');
  }
  const [, kid, iv, ciphertext, tag] = parts as [string, string, string, string, string];
  if (kid !== kek.id) {
    throw new KeyDecryptionError(`the upstream key was sealed by key-encryption key ${kid}, not ${kek.id}`);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek.key, Buffer.from(iv, 'base64url'));
    decipher.setAAD(AAD);
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString(
      'utf8',
    );
  } catch {
    throw new KeyDecryptionError(
      'the stored upstream key failed authentication (altered, or another secret)',
    );
  }
}
