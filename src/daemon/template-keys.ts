import {
  decryptKey,
  isEncryptedKey,
  KeyDecryptionError,
  type KeyEncryptionKey,
} from '../domain/key-encryption.js';

/**
 * Opens the upstream keys the claim returns from template rows: a plain key as it is, a sealed one
 * (src/domain/key-encryption.ts) with this daemon's key-encryption key. Every row of a file carries
 * the same few keys, so opened keys are kept by their stored form (bounded): one AES-GCM open per
 * distinct key, not one per request. Opened keys live only in this process's memory.
 */
export class TemplateKeys {
  private readonly opened = new Map<string, string>();
  private static readonly MAX = 1000;

  constructor(private readonly kek: KeyEncryptionKey | null) {}

  /** The key to send, or a KeyDecryptionError naming why it cannot be opened (never the key). */
  open(stored: string): string {
    if (!isEncryptedKey(stored)) return stored;
    const hit = this.opened.get(stored);
    if (hit !== undefined) return hit;
    if (this.kek === null) throw new KeyDecryptionError('this daemon holds no key-encryption key');
    const plain = decryptKey(stored, this.kek);
    if (this.opened.size >= TemplateKeys.MAX) this.opened.clear();
    this.opened.set(stored, plain);
    return plain;
  }
}
