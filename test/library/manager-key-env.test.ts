import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { KEY_ENCRYPTION_ENV, PostgresRequestManager } from '../../src/manager/request-manager.js';

/**
 * The key-encryption key from the environment: a manager reads FUSILLADE_KEY_ENCRYPTION_KEY unless
 * its config says `keyEncryptionKey: null` (the CLI's operator commands, which seal nothing: a
 * malformed key in the environment is not theirs to refuse). No database is needed: the manager
 * reads it when it is made.
 */
describe('a manager and FUSILLADE_KEY_ENCRYPTION_KEY', () => {
  const before = process.env[KEY_ENCRYPTION_ENV];
  const pool = new pg.Pool({ max: 1 });
  afterEach(async () => {
    if (before === undefined) delete process.env[KEY_ENCRYPTION_ENV];
    else process.env[KEY_ENCRYPTION_ENV] = before;
  });
  afterAll(() => pool.end());

  it('refuses a malformed key from the environment when it is made', () => {
    process.env[KEY_ENCRYPTION_ENV] = 'not a key';
    expect(() => new PostgresRequestManager(pool)).toThrow(/32 random bytes/);
  });

  it('reads no key from the environment with keyEncryptionKey: null', () => {
    process.env[KEY_ENCRYPTION_ENV] = 'not a key';
    const manager = new PostgresRequestManager(pool, { keyEncryptionKey: null });
    expect(manager.config.keyEncryptionKey).toBeUndefined();
  });
});
