// CPU time from /proc, for the bench's cost figures: one process's, and the whole host's.
import { readFile } from 'node:fs/promises';

/** USER_HZ: /proc reports times in ticks of 1/100 s on Linux. */
const CLOCK_TICKS = 100;

/** utime + stime of a process (fields 14 and 15 of /proc/PID/stat) in seconds; 0 without a pid. */
export async function processCpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(stat[11]) + Number(stat[12])) / CLOCK_TICKS;
}

/** Busy time of every CPU (user, nice, system, irq, softirq, steal) in seconds. */
export async function hostBusySeconds(): Promise<number> {
  const cpu = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = cpu;
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}
