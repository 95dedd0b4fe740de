#!/usr/bin/env node
// Other load on the machine during a bench run (the FUSE numbers are latency-bound and move with
// every busy neighbour on a 2-vCPU machine).
//   node bench/host-cpu.mjs snapshot OUT.json           at the start of the run
//   node bench/host-cpu.mjs diff START.json SELF_PID    at the end: JSON list of the processes
//       outside SELF_PID's tree that used CPU during the run, with CPU seconds, biggest first
// Processes that started and ended between the two snapshots are not seen.
import fs from 'node:fs';

const HZ = 100; // USER_HZ: /proc/PID/stat utime and stime are in these ticks on Linux
function procs() {
  const out = {};
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out[pid] = { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / HZ, start: Number(f[19]), args: args || st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')) };
    } catch { /* gone */ }
  }
  return out;
}
const [cmd, a, b] = process.argv.slice(2);
if (cmd === 'snapshot') {
  fs.writeFileSync(a, JSON.stringify({ procs: procs() }));
} else if (cmd === 'diff') {
  const start = JSON.parse(fs.readFileSync(a, 'utf8')).procs;
  const now = procs();
  const self = String(b);
  const ours = (pid) => { for (let p = pid, i = 0; p && now[p] && i < 64; p = String(now[p].ppid), i++) if (p === self) return true; return false; };
  const rows = [];
  for (const [pid, p] of Object.entries(now)) {
    if (ours(pid) || pid === '2' || p.ppid === 2) continue; // ours, or kernel threads (loop and flush workers serve our I/O)
    const before = start[pid] && start[pid].start === p.start ? start[pid].cpu : 0;
    const used = p.cpu - before;
    if (used >= 1) rows.push({ pid: Number(pid), cpuS: Math.round(used * 10) / 10, args: p.args.slice(0, 160) });
  }
  rows.sort((x, y) => y.cpuS - x.cpuS);
  process.stdout.write(JSON.stringify(rows.slice(0, 10)));
} else {
  console.error('usage: host-cpu.mjs snapshot OUT.json | diff START.json SELF_PID');
  process.exit(2);
}
