import net from 'node:net';

/** Raw multipart bodies and sockets, for uploads the official client cannot produce (cut off, stalled). */

export const BOUNDARY = 'fusilladeTestBoundary7MA4YWxkTrZu0gW';

export function multipartHead(filename = 'input.jsonl', purpose = 'batch'): Buffer {
  return Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n${purpose}\r\n` +
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
      'Content-Type: application/jsonl\r\n\r\n',
  );
}

export const multipartTail = (): Buffer => Buffer.from(`\r\n--${BOUNDARY}--\r\n`);

export function multipartBody(content: Buffer | string, filename?: string): Buffer {
  return Buffer.concat([multipartHead(filename), Buffer.from(content), multipartTail()]);
}

/** The request head of a multipart POST /v1/files declaring `length` body bytes. */
export function uploadHead(port: number, key: string, length: number): Buffer {
  return Buffer.from(
    'POST /v1/files HTTP/1.1\r\n' +
      `Host: 127.0.0.1:${port}\r\n` +
      `Authorization: Bearer ${key}\r\n` +
      `Content-Type: multipart/form-data; boundary=${BOUNDARY}\r\n` +
      `Content-Length: ${length}\r\n` +
      'Connection: close\r\n\r\n',
  );
}

/** Opens a loopback socket and writes `bytes`; resolves once written. */
export async function openAndWrite(port: number, bytes: Buffer): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  await new Promise<void>((resolve) => socket.write(bytes, () => resolve()));
  return socket;
}

/** Everything the server sends on `socket` until it closes (or `ms` pass). */
export function readAll(socket: net.Socket, ms = 10_000): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const done = () => {
      clearTimeout(timer);
      resolve(text);
    };
    const timer = setTimeout(done, ms);
    socket.on('data', (d) => {
      text += d.toString('utf8');
    });
    socket.on('close', done);
  });
}
