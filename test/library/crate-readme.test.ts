/**
 * The Rust crate's README example (its "Basic Example", "Concurrency Control" and "Tracking
 * Requests"), ported line by line as a user of the crate would, and run against the mock upstream.
 * Each Rust line is quoted above its TypeScript. docs/porting-from-rust.md has the name table.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  migrate,
  PostgresRequestManager,
  type RequestTemplateInput,
  startMockUpstream,
} from '../../src/index.js';
import type { MockUpstream } from '../../src/mock-upstream/server.js';
import { TEST_DATABASE_URL } from '../support/db.js';
import { waitFor } from '../support/mock-upstream.js';

let mock: MockUpstream;
const schema = `t_crate_${process.pid}`;
const printed: string[] = [];
const println = (line: string) => printed.push(line);

beforeAll(async () => {
  mock = await startMockUpstream();
  // One line of the example fails, so its "failed" arm has something to print.
  mock.setBehaviour((req) =>
    req.body?.includes('"Goodbye"')
      ? { kind: 'status', status: 400, body: { error: { message: "'messages' must not say goodbye" } } }
      : { kind: 'ok' },
  );
  process.env.OPENAI_API_KEY ??= 'sk-from-the-environment';
});
afterAll(async () => {
  await mock.close();
});

it("runs the crate's README example, ported line by line", async () => {
  // use fusillade::{PostgresRequestManager, RequestTemplateInput};  (the imports above)

  // // Setup
  // let pool = PgPool::connect("postgresql://localhost/fusillade").await?;
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL });
  // fusillade::migrator().run(&pool).await?;
  await migrate(pool, { schema });

  // let mut model_limits = HashMap::new();
  // model_limits.insert("gpt-4".to_string(), 5);
  // model_limits.insert("gpt-3.5-turbo".to_string(), 20);
  // let config = DaemonConfig { model_concurrency_limits: model_limits, max_retries: 3, backoff_ms: 1000, ..Default::default() };
  // let manager = Arc::new(PostgresRequestManager::new(pool).with_config(config));
  const manager = new PostgresRequestManager(pool, {
    modelConcurrencyLimits: { 'gpt-4': 5, 'gpt-3.5-turbo': 20 },
    maxRetries: 3,
    backoffMs: 1000,
    // The crate's create_batch(file_id) sets no deadline: say so (the default here is 24 hours).
    defaultCompletionWindow: null,
    schema, // (only because this test keeps its tables apart; the default is "fusillade")
    logger: () => {},
  });

  try {
    // // Start the daemon
    // let daemon_handle = manager.clone().run()?;
    const daemonHandle = await manager.run();

    // // Create a file with request templates
    // let file_id = manager.create_file(
    //     "completions".to_string(),
    //     Some("GPT-4 completions batch".to_string()),
    //     vec![
    //         RequestTemplateInput {
    //             endpoint: "https://api.openai.com".to_string(),
    //             method: "POST".to_string(),
    //             path: "/v1/chat/completions".to_string(),
    //             body: r#"{"model":"gpt-4","messages":[{"role":"user","content":"Hello"}]}"#.to_string(),
    //             model: "gpt-4".to_string(),
    //             api_key: env::var("OPENAI_API_KEY")?,
    //         },
    //     ],
    // ).await?;
    const fileId = await manager.createFile('completions', 'GPT-4 completions batch', [
      {
        endpoint: mock.url, // "https://api.openai.com" in the crate's README; the mock here
        method: 'POST',
        path: '/v1/chat/completions',
        body: '{"model":"gpt-4","messages":[{"role":"user","content":"Hello"}]}',
        model: 'gpt-4',
        apiKey: process.env.OPENAI_API_KEY!,
      },
      {
        endpoint: mock.url,
        method: 'POST',
        path: '/v1/chat/completions',
        body: '{"model":"gpt-4","messages":[{"role":"user","content":"Goodbye"}]}',
        model: 'gpt-4',
        apiKey: process.env.OPENAI_API_KEY!,
      },
    ] satisfies RequestTemplateInput[]);

    // // Launch a batch from that file
    // let batch_id = manager.create_batch(file_id).await?;
    const batchId = await manager.createBatch(fileId);

    // // Check the status of the batch
    // let status = manager.get_batch_status(batch_id).await?;
    // println!("Completed: {}/{}", status.completed_requests, status.total_requests);
    const status = await manager.getBatchStatus(batchId);
    println(`Completed: ${status.completedRequests}/${status.totalRequests}`);

    // (Waiting for the daemon, which the README leaves out.)
    await waitFor(async () => (await manager.getBatchStatus(batchId)).finishedAt !== null);

    // // Get all requests for a batch
    // let requests = manager.get_batch_requests(batch_id).await?;
    const requests = await manager.getBatchRequests(batchId);

    // for req in requests {
    //     match req {
    //         AnyRequest::Completed(r) => {
    //             println!("Request {} completed: {}", r.data.id, r.state.response_body);
    //         }
    //         AnyRequest::Failed(r) => {
    //             println!("Request {} failed: {}", r.data.id, r.state.error);
    //         }
    //         _ => {}
    //     }
    // }
    for (const req of requests) {
      switch (req.state) {
        case 'completed':
          println(`Request ${req.id} completed: ${req.responseBody}`);
          break;
        case 'failed':
          println(`Request ${req.id} failed: ${req.error.message}`);
          break;
        default:
      }
    }

    // What it printed: the status right after creation, one completion, and a readable failure.
    // (How many were done by then depends on the daemon's pace; the line's form does not.)
    expect(printed[0]).toMatch(/^Completed: [0-2]\/2$/);
    expect(printed[1]).toMatch(new RegExp(`^Request ${requests[0]!.id} completed: \\{.*"chat\\.completion"`));
    expect(printed[2]).toBe(`Request ${requests[1]!.id} failed: 'messages' must not say goodbye`);
    expect(printed).toHaveLength(3);
    // The key from the environment went to the upstream as the crate sends it.
    expect(mock.requests[0]!.headers.authorization).toBe(`Bearer ${process.env.OPENAI_API_KEY}`);
    // No deadline, as in the crate.
    expect((await manager.getBatch(batchId)).expiresAt).toBeNull();

    await daemonHandle.stop();
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
});
