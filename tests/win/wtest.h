/* wtest.h: the Windows agent's unit tests, a harness of a few macros.
 *
 * Criterion has no mingw build (it needs boxfort and nanomsg), so the Windows tests use
 * this: each test is a function registered with WTEST(), run in order by wtest_main();
 * WT_ASSERT() reports the file, line and a message and ends that test (the others still
 * run). The program's exit code is the number of failed tests (0..100), which meson reads
 * through wine (tools/wine-run; wine keeps 8 bits). Output is TAP-like, one line per test.
 *
 * One test file is one program: define WTEST_MAIN before including this in exactly one
 * translation unit of it, then call wtest_main() from main(). */
#pragma once

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

typedef void (*wtest_fn)(void);

struct wtest {
    const char *name;
    wtest_fn fn;
};

#define WTEST_MAX 256

extern struct wtest wtest_list[WTEST_MAX];
extern int wtest_count;
extern jmp_buf wtest_jmp;

void wtest_register(const char *name, wtest_fn fn);
int wtest_main(int argc, char **argv);

/* Define a test: WTEST(exec, timeout_kills_children) { ... }. Registered before main(). */
#define WTEST(suite, name)                                                                         \
    static void wtest_##suite##_##name(void);                                                      \
    __attribute__((constructor)) static void wtest_reg_##suite##_##name(void)                      \
    {                                                                                              \
        wtest_register(#suite "::" #name, wtest_##suite##_##name);                                 \
    }                                                                                              \
    static void wtest_##suite##_##name(void)

/* Fail the running test unless cond holds; the rest is a printf format for the reason. */
#define WT_ASSERT(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stdout, "#   %s:%d: assertion failed: %s:", __FILE__, __LINE__, #cond);        \
            fprintf(stdout, " " __VA_ARGS__);                                                      \
            fputc('\n', stdout);                                                                   \
            fflush(stdout);                                                                        \
            longjmp(wtest_jmp, 1);                                                                 \
        }                                                                                          \
    } while (0)

#ifdef WTEST_MAIN
struct wtest wtest_list[WTEST_MAX];
int wtest_count;
jmp_buf wtest_jmp;

void wtest_register(const char *name, wtest_fn fn)
{
    if (wtest_count < WTEST_MAX)
        wtest_list[wtest_count++] = (struct wtest){name, fn};
}

/* Run every test, or those whose name contains argv[1]. Returns the failures (capped at
 * 100, so that wine's 8-bit exit code cannot wrap to 0). */
int wtest_main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    /* volatile: they live across setjmp()/longjmp(). */
    volatile int run = 0, failed = 0;
    for (volatile int i = 0; i < wtest_count; i++) {
        if (filter && !strstr(wtest_list[i].name, filter))
            continue;
        run++;
        fprintf(stdout, "# %s\n", wtest_list[i].name);
        fflush(stdout);
        if (setjmp(wtest_jmp) == 0) {
            wtest_list[i].fn();
            fprintf(stdout, "ok %d - %s\n", run, wtest_list[i].name);
        } else {
            failed++;
            fprintf(stdout, "not ok %d - %s\n", run, wtest_list[i].name);
        }
        fflush(stdout);
    }
    fprintf(stdout, "1..%d\n# %d passed, %d failed\n", run, run - failed, failed);
    return failed > 100 ? 100 : failed;
}
#endif
