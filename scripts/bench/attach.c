/* Loads a BPF object with libbpf, attaches every program in it, prints "attached" and waits
 * until killed (scripts/bench-offcpu.sh's "hook" setup).
 * usage: attach OBJECT.o */
#include <bpf/libbpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv) {
    struct bpf_object *obj;
    struct bpf_program *prog;

    if (argc != 2) {
        fprintf(stderr, "usage: attach OBJECT.o\n");
        return 2;
    }
    /* A background job of a script starts with SIGINT ignored: the script stops it with one. */
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj)) {
        fprintf(stderr, "attach: cannot load %s\n", argv[1]);
        return 1;
    }
    bpf_object__for_each_program(prog, obj) {
        if (!bpf_program__attach(prog)) {
            fprintf(stderr, "attach: cannot attach %s\n", bpf_program__name(prog));
            return 1;
        }
    }
    printf("attached\n");
    fflush(stdout);
    pause();
    return 0;
}
