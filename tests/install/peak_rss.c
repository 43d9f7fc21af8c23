/* peak_rss PROGRAM [ARGS...]: runs the program (its output discarded) and
 * prints its peak resident memory in KiB, as `/usr/bin/time -v` reports it
 * ("Maximum resident set size"). Exits non-zero if the program could not
 * run or failed. A small C parent, because a child's peak includes what the
 * parent had mapped before exec (a python3 parent adds ~10 MB). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: peak_rss PROGRAM [ARGS...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("peak_rss: fork");
        return 1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execvp(argv[1], argv + 1);
        perror("peak_rss: exec");
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("peak_rss: wait4");
        return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "peak_rss: %s failed (status %d)\n", argv[1], status);
        return 1;
    }
    printf("%ld\n", ru.ru_maxrss);
    return 0;
}
