/**
 * Preloaded (`node --import`) into a timed child process: at exit it writes the process's own CPU time
 * (process.cpuUsage(), µs) to $BENCH_CPU_FILE, so a bench can split the CPU of a whole process run
 * (e.g. `fusillade run`) without changing the program it measures.
 */
import { writeFileSync } from 'node:fs';

const file = process.env.BENCH_CPU_FILE;
if (file) {
  process.on('exit', () => {
    try {
      writeFileSync(file, JSON.stringify(process.cpuUsage()));
    } catch {
      // The bench then reports the CPU as unknown.
    }
  });
}
