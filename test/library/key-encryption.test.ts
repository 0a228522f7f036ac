import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSettings } from '../../src/config/settings.js';
import { ValidationError } from '../../src/domain/errors.js';
import {
  decryptKey,
  encryptedKeyId,
  encryptKey,
  isEncryptedKey,
  KeyDecryptionError,
  parseKeyEncryptionKey,
} from '../../src/domain/key-encryption.js';
import { type MockUpstream, startMockUpstream } from '../../src/mock-upstream/server.js';
import { createTestDb, type TestDb } from '../support/db.js';
import { mockTemplates, waitForBatchEnd } from '../support/mock-upstream.js';

const SECRET = randomBytes(32).toString('base64');
const OTHER = randomBytes(32).toString('hex');

describe('upstream keys sealed with AES-256-GCM', () => {
  it('takes 32 random bytes as base64 or hex, and refuses passphrases', () => {
    const kek = parseKeyEncryptionKey(SECRET);
    expect(kek.key).toHaveLength(32);
    expect(kek.id).toMatch(/^[0-9a-f]{16}$/);
    expect(parseKeyEncryptionKey(OTHER).key).toHaveLength(32);
    // base64url and surrounding whitespace are fine; the id does not depend on the spelling.
    expect(parseKeyEncryptionKey(` ${Buffer.from(SECRET, 'base64').toString('base64url')}\n`).id).toBe(
      kek.id,
    );
    for (const bad of [
      '',
      'correct horse battery staple',
      randomBytes(16).toString('base64'),
      'x'.repeat(64),
    ]) {
      expect(() => parseKeyEncryptionKey(bad)).toThrow(/32 random bytes/);
    }
  });

  it('round-trips, with a fresh IV each time, a versioned form, and the secret named but not shown', () => {
    const kek = parseKeyEncryptionKey(SECRET);
    const a = encryptKey('sk-live-1234', kek);
    const b = encryptKey('sk-live-1234', kek);
    expect(a).not.toBe(b);
    expect(a.startsWith(`fk1.${kek.id}.`)).toBe(true);
    expect(a).not.toContain('sk-live');
    expect(isEncryptedKey(a)).toBe(true);
    expect(isEncryptedKey('sk-live-1234')).toBe(false);
    expect(encryptedKeyId(a)).toBe(kek.id);
    expect(encryptedKeyId('sk-plain')).toBeNull();
    expect(decryptKey(a, kek)).toBe('sk-live-1234');
    expect(decryptKey(encryptKey('', kek), kek)).toBe('');
    expect(decryptKey(encryptKey('ключ-🔑', kek), kek)).toBe('ключ-🔑');
  });

  it('refuses another secret and any alteration, with an error that holds no key', () => {
    const kek = parseKeyEncryptionKey(SECRET);
    const sealed = encryptKey('sk-live-1234', kek);
    expect(() => decryptKey(sealed, parseKeyEncryptionKey(OTHER))).toThrow(KeyDecryptionError);
    const parts = sealed.split('.');
    const flip = (s: string) => (s[0] === 'A' ? `B${s.slice(1)}` : `A${s.slice(1)}`);
    for (const i of [2, 3, 4]) {
      const altered = parts.map((p, j) => (j === i ? flip(p) : p)).join('.');
      expect(() => decryptKey(altered, kek)).toThrow(/failed authentication/);
    }
    expect(() => decryptKey('fk2.x.y.z.w', kek)).toThrow(KeyDecryptionError);
    try {
      decryptKey(sealed, parseKeyEncryptionKey(OTHER));
    } catch (err) {
      expect(String(err)).not.toContain('sk-live');
    }
  });
});

describe('a library whose keyEncryptionKey is set', () => {
  let db: TestDb;
  let mock: MockUpstream;
  const KEY = 'sk-live-secret-4242';

  beforeAll(async () => {
    db = await createTestDb();
    mock = await startMockUpstream();
  });
  afterAll(async () => {
    await mock.close();
    await db.close();
  });

  /** Rows of any table of the schema whose text contains `needle`. */
  async function rowsContaining(needle: string): Promise<string[]> {
    const { rows: tables } = await db.pool.query<{ t: string }>(
      `SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'`,
      [db.schema],
    );
    const found: string[] = [];
    for (const { t } of tables) {
      const { rows } = await db.pool.query(
        `SELECT count(*)::int AS n FROM "${db.schema}"."${t}" x WHERE strpos(x::text, $1) > 0`,
        [needle],
      );
      if (rows[0].n > 0) found.push(t);
    }
    return found;
  }

  it('stores sealed keys; only a daemon holding the secret claims them; a tampered one fails clearly', async () => {
    const sealing = db.manager({ keyEncryptionKey: SECRET, pollIntervalMs: 100, logger: () => {} });
    const kid = parseKeyEncryptionKey(SECRET).id;
    const fileId = await sealing.createFile(
      'sealed.jsonl',
      null,
      mockTemplates(mock, 3, { prefix: 's-', apiKey: KEY }),
    );
    const { rows } = await db.pool.query(
      `SELECT api_key FROM ${sealing.schema}.request_templates WHERE file_id = $1`,
      [fileId],
    );
    for (const r of rows) expect(r.api_key.startsWith(`fk1.${kid}.`)).toBe(true);
    const sealedBatch = await sealing.createBatch(fileId);
    expect(await sealing.getBatchUpstreams(sealedBatch)).toEqual([
      expect.objectContaining({
        upstream: mock.url,
        credential: `template-sealed:${kid}`,
        daemons: 0,
        waiting: true,
      }),
    ]);

    // Daemons without the secret, or with another one, leave these rows alone (and send plain ones).
    const without = await db.manager({ pollIntervalMs: 100, logger: () => {} }).run();
    const other = await db.manager({ keyEncryptionKey: OTHER, pollIntervalMs: 100, logger: () => {} }).run();
    const plain = db.manager({ pollIntervalMs: 100 });
    const plainBatch = await plain.createBatch(
      await plain.createFile(
        'plain.jsonl',
        null,
        mockTemplates(mock, 4, { prefix: 'p-', apiKey: 'sk-plain' }),
      ),
    );
    expect((await waitForBatchEnd(plain, plainBatch, 60_000)).completedRequests).toBe(4);
    const waiting = await sealing.getBatchRequests(sealedBatch);
    expect(waiting.map((r) => r.state)).toEqual(['pending', 'pending', 'pending']);
    expect(mock.requests.filter((r) => r.customId?.startsWith('s-'))).toHaveLength(0);
    expect((await sealing.getBatchUpstreams(sealedBatch))[0]).toMatchObject({ daemons: 0, waiting: true });

    // The daemon with the secret sends them, with the key as given.
    const holder = await sealing.run();
    expect((await waitForBatchEnd(sealing, sealedBatch, 60_000)).completedRequests).toBe(3);
    const sent = mock.requests.filter((r) => r.customId?.startsWith('s-'));
    expect(sent.map((r) => r.headers.authorization)).toEqual([
      `Bearer ${KEY}`,
      `Bearer ${KEY}`,
      `Bearer ${KEY}`,
    ]);

    // A sealed key altered in the table fails its request, saying why, without retries.
    const tamperedFile = await sealing.createFile(
      't.jsonl',
      null,
      mockTemplates(mock, 1, { prefix: 't-', apiKey: KEY }),
    );
    await db.pool.query(
      `UPDATE ${sealing.schema}.request_templates
          SET api_key = regexp_replace(api_key, '\\.([A-Za-z0-9_-])([A-Za-z0-9_-]*)$', '.A\\2') || 'A'
        WHERE file_id = $1`,
      [tamperedFile],
    );
    const tamperedBatch = await sealing.createBatch(tamperedFile);
    await waitForBatchEnd(sealing, tamperedBatch, 60_000);
    const [failed] = await sealing.getBatchRequests(tamperedBatch);
    expect(failed).toMatchObject({ state: 'failed', attempt: 1, error: { code: 'key_decryption_failed' } });
    expect((failed as { error: { message: string } }).error.message).toMatch(/could not be opened/);
    expect(mock.requests.filter((r) => r.customId?.startsWith('t-'))).toHaveLength(0);

    await Promise.all([without.stop(), other.stop(), holder.stop()]);
    // Neither the key nor the secret is in any table (daemon rows record their settings).
    expect(await rowsContaining(KEY)).toEqual([]);
    expect(await rowsContaining(SECRET)).toEqual([]);
    expect(await rowsContaining('sk-plain')).toEqual(['request_templates']);
  }, 180_000);

  it('reads FUSILLADE_KEY_ENCRYPTION_KEY, refuses a bad secret, and a plain key that looks sealed', async () => {
    const before = process.env.FUSILLADE_KEY_ENCRYPTION_KEY;
    process.env.FUSILLADE_KEY_ENCRYPTION_KEY = SECRET;
    try {
      const m = db.manager();
      expect(m.config.keyEncryptionKey).toBe(SECRET);
    } finally {
      if (before === undefined) delete process.env.FUSILLADE_KEY_ENCRYPTION_KEY;
      else process.env.FUSILLADE_KEY_ENCRYPTION_KEY = before;
    }
    expect(() => db.manager({ keyEncryptionKey: 'hunter2' })).toThrow(ValidationError);
    await expect(
      db.manager().createFile('x', null, mockTemplates(mock, 1, { apiKey: 'fk1.abc.def.ghi.jkl' })),
    ).rejects.toMatchObject({ issues: [{ code: 'invalid_api_key' }] });
  });

  it('the CLI takes the secret from the environment (or a variable the config file names), never the file', async () => {
    const settings = await resolveSettings({}, { FUSILLADE_KEY_ENCRYPTION_KEY: SECRET }, 'daemon');
    expect(settings.daemonConfig.keyEncryptionKey).toBe(SECRET);
    const path = join(tmpdir(), `fusillade-kek-${process.pid}.json`);
    await writeFile(path, JSON.stringify({ keyEncryptionKeyEnv: 'MY_KEK' }));
    const named = await resolveSettings({ config: path }, { MY_KEK: OTHER }, 'daemon');
    expect(named.daemonConfig.keyEncryptionKey).toBe(OTHER);
    await writeFile(path, JSON.stringify({ keyEncryptionKey: SECRET }));
    await expect(resolveSettings({ config: path }, {}, 'daemon')).rejects.toThrow(/keyEncryptionKey/);
  });
});
