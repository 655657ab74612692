"""Known Python stacks for tests/python_readers.rs (runs on CPython 3.6+).

Four threads, each parked in a one-line busy loop so that every stop finds it on a known line:
the main thread in outer -> middle -> leaf, a thread recursing DEPTH times in Walker.step, a
thread inside a key function called by sorted() (C), and a thread inside a generator. Lines
marked `# MARK:name` are found by the test, which asserts them as the frames' lines.
"""
import sys
import threading
import time

DEPTH = 30
started = []


def leaf():
    n = 0
    print("ready", flush=True)
    while True: n += 1  # MARK:leaf


def middle():
    leaf()  # MARK:middle


def outer():
    middle()  # MARK:outer


class Walker:
    def step(self, n):
        if n == 0:
            started.append("walker")
            while True: n -= 1  # MARK:step
        return self.step(n - 1)  # MARK:step_call


def walk():
    Walker().step(DEPTH)  # MARK:walk


def key_of(x):
    started.append("key")
    while True: x += 1  # MARK:key


def sorter():
    return sorted([3, 1, 2], key=key_of)  # MARK:sorter


def counting():
    n = 0
    started.append("gen")
    while True: n += 1  # MARK:gen
    yield n


def consume():
    for _ in counting():  # MARK:consume
        pass


for target in (walk, sorter, consume):
    threading.Thread(target=target, daemon=True).start()
while len(started) < 3:
    time.sleep(0.01)
outer()  # MARK:main
sys.exit(1)
