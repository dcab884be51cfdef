#!/usr/bin/env python3
"""Checks lua/token_bucket.lua against an earlier version of it, on a running
redis-server (7.0 or later: PEXPIRETIME).

- Decisions: the new and the old script run on two keys with the same `now`
  (the server's TIME, read just before and passed in place of the script's own
  TIME call), random parameters and costs; their replies and stored TATs must
  be equal (compared only for margins >= 2 ms: the old script could let a key
  expire up to 1 ms before its TAT with a smaller margin).
- Expiry: the new script runs on a third key with its own TIME, sometimes
  followed by an undo.lua of its reservation, sometimes a pause; after every
  call the key's PEXPIRETIME must be at least TAT + MIN_AFTER_US (5 ms), and a
  missing key must mean a TAT in the past. Counts the admissions that kept the
  key's TTL (SET ... KEEPTTL).

Usage: bench/check_token_bucket.py PORT [--new lua/token_bucket.lua]
         [--old OLD.lua] [--undo lua/undo.lua] [--seed N] [--rounds N] [--min-after-us US]
  e.g. git show 61d4817:lua/token_bucket.lua > /tmp/before.lua
       bench/check_token_bucket.py 6379 --old /tmp/before.lua
Uses keys eq:new, eq:old, ttl:real and deletes them. Standard library only.
"""
import argparse, os, random, socket, sys, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('port', type=int)
ap.add_argument('--new', default=os.path.join(root, 'lua/token_bucket.lua'))
ap.add_argument('--old', required=True)
ap.add_argument('--undo', default=os.path.join(root, 'lua/undo.lua'))
ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--rounds', type=int, default=40)
ap.add_argument('--min-after-us', type=int, default=5000)
args = ap.parse_args()
port, new_path, old_path, undo_path = args.port, args.new, args.old, args.undo
s = socket.create_connection(('127.0.0.1', port)); f = s.makefile('rb')
def cmd(*args):
    out = b'*%d\r\n' % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b'$%d\r\n%s\r\n' % (len(a), a)
    s.sendall(out); return read()
def read():
    line = f.readline()[:-2]; t, rest = line[:1], line[1:]
    if t == b'+': return rest.decode()
    if t == b'-': raise RuntimeError(rest.decode())
    if t == b':': return int(rest)
    if t == b'$':
        n = int(rest)
        if n < 0: return None
        d = f.read(n + 2)[:-2]; return d.decode()
    if t == b'*':
        n = int(rest); return None if n < 0 else [read() for _ in range(n)]
fake = lambda src: src.replace("local t = redis.call('TIME')", "local t = {ARGV[9], ARGV[10]}")
new_src, old_src = open(new_path).read(), open(old_path).read()
assert "local t = redis.call('TIME')" in new_src and "local t = redis.call('TIME')" in old_src
NEW = cmd('SCRIPT', 'LOAD', fake(new_src)); OLD = cmd('SCRIPT', 'LOAD', fake(old_src))
REAL = cmd('SCRIPT', 'LOAD', new_src); UNDO = cmd('SCRIPT', 'LOAD', open(undo_path).read())
PROBE = cmd('SCRIPT', 'LOAD', "local t = redis.call('TIME'); return {t[1], t[2], redis.call('GET', KEYS[1]) or '', redis.call('PEXPIRETIME', KEYS[1])}")
random.seed(args.seed)
configs = [  # interval us, burst, margin us
    (100, 50, 10000), (1000, 5, 10000), (2000, 1, 0), (7, 1000, 3000), (100000, 3, 10000),
    (50, 10, 100000), (333, 2, 5000), (3000, 20, 12345), (10, 1, 1999)]
def decision(r, key):
    """A reply as {status, wait, tat}: the short forms (0 admitted now, -n
    refused with retry-after n) expanded, the TAT read from the key."""
    if r == 0:
        return [1, 0, int(cmd('GET', key))]
    if isinstance(r, int):
        return [0, -r, 0]
    return r

checks = mismatches = keepttl = admitted_live = 0
MIN_AFTER = args.min_after_us
for round_ in range(args.rounds):
    interval, burst, margin = random.choice(configs)
    kn, ko, kr = 'eq:new', 'eq:old', 'ttl:real'
    cmd('DEL', kn, ko, kr)
    last_tat = 0
    for i in range(random.randint(20, 300)):
        cost = random.choice([1, 1, 1, 2, burst])
        max_wait = random.choice([0, 0, -1, interval * 3, 5000])
        argv = [interval, burst, cost, max_wait, margin, 0, 'id', 1000000]
        t = cmd('TIME')
        a = decision(cmd('EVALSHA', NEW, 2, kn, 'lease', *argv, t[0], t[1]), kn)
        b = decision(cmd('EVALSHA', OLD, 2, ko, 'lease', *argv, t[0], t[1]), ko)
        if margin >= 2000 and (a != b or cmd('GET', kn) != cmd('GET', ko)):
            mismatches += 1
            print('MISMATCH', interval, burst, margin, argv, a, b, cmd('GET', kn), cmd('GET', ko))
        # The real script (its own TIME), then its key's expiry against its TAT.
        before = cmd('PEXPIRETIME', kr)
        r = decision(cmd('EVALSHA', REAL, 2, kr, 'lease', *argv), kr)
        if r[0] == 1 and before > 0:
            admitted_live += 1
            if cmd('PEXPIRETIME', kr) == before:
                keepttl += 1
        if r[0] == 1:
            last_tat = r[2]
            if random.random() < 0.1:  # cancelled: give the reservation back
                cmd('EVALSHA', UNDO, 2, kr, 'lease', 'tb', r[2], cost * interval, '')
                if cmd('GET', kr) == str(r[2] - cost * interval):
                    last_tat = r[2] - cost * interval
        p = cmd('EVALSHA', PROBE, 1, kr)
        now = int(p[0]) * 1000000 + int(p[1])
        checks += 1
        if p[2] == '':
            if now < last_tat:
                print('LOST STATE: key gone at', now, 'before its TAT', last_tat); sys.exit(1)
        else:
            tat, exp_ms = int(p[2]), p[3]
            if exp_ms < 0 or exp_ms * 1000 < tat + MIN_AFTER:
                print('SHORT TTL', interval, burst, margin, 'tat', tat, 'expiry ms', exp_ms); sys.exit(1)
        if random.random() < 0.05:
            time.sleep(random.choice([0.001, 0.004, 0.02]))
print('ok: %d calls checked, %d decision mismatches; of %d admissions on a live key, %d kept its TTL'
      % (checks, mismatches, admitted_live, keepttl))
sys.exit(1 if mismatches else 0)
