/* A context-switch storm in one process (scripts/bench-offcpu.sh): two threads pass a byte back
 * and forth through two pipes, ROUNDS times (two context switches per round when they share a
 * CPU, two wake-ups in any case). Prints "ready", waits for a line on stdin, runs, prints the
 * elapsed seconds, then waits for EOF. Its own process so that a profiler can be told its pid.
 * usage: pingpong ROUNDS */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];
static long rounds;

static void *echo(void *arg) {
    char c;
    (void)arg;
    for (long i = 0; i < rounds; i++) {
        if (read(ping[0], &c, 1) != 1 || write(pong[1], &c, 1) != 1) exit(3);
    }
    return NULL;
}

int main(int argc, char **argv) {
    char line[16], c = 'x';
    pthread_t t;
    struct timespec a, b;
    rounds = argc > 1 ? atol(argv[1]) : 100000;
    if (pipe(ping) || pipe(pong)) return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    if (!fgets(line, sizeof(line), stdin)) return 1;
    pthread_create(&t, NULL, echo, NULL);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < rounds; i++) {
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1) return 3;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    while (fgets(line, sizeof(line), stdin)) {}
    return 0;
}
