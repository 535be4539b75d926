/* exec-uids.c: job users from a range of uids (see exec-uids.h). */
#include "agent/exec-uids.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct exec_uids {
    pthread_mutex_t lock;
    unsigned first;
    size_t n;
    size_t next; /* where the next search starts */
    bool *taken; /* n entries */
};

static bool range_ok(unsigned first, unsigned last)
{
    return first >= 1 && first <= last && last < UINT32_MAX &&
           (uint64_t)last - first + 1 <= EXEC_UIDS_MAX;
}

/* A decimal number of at most 10 digits from *s, which is moved past it. */
static int parse_uint(const char **s, unsigned *ret)
{
    uint64_t v = 0;
    int digits = 0;
    while (**s >= '0' && **s <= '9') {
        if (++digits > 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(**s - '0');
        (*s)++;
    }
    if (digits == 0 || v > UINT32_MAX)
        return -EINVAL;
    *ret = (unsigned)v;
    return 0;
}

int exec_uids_parse(const char *text, unsigned *first, unsigned *last)
{
    unsigned a, b;
    const char *s = text;
    if (!s || parse_uint(&s, &a) < 0 || *s++ != '-' || parse_uint(&s, &b) < 0 || *s != '\0' ||
        !range_ok(a, b))
        return -EINVAL;
    *first = a;
    *last = b;
    return 0;
}

int exec_uids_new(unsigned first, unsigned last, struct exec_uids **ret)
{
    if (!range_ok(first, last))
        return -EINVAL;
    struct exec_uids *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->first = first;
    u->n = (size_t)(last - first) + 1;
    u->taken = calloc(u->n, sizeof(*u->taken));
    if (!u->taken) {
        free(u);
        return -ENOMEM;
    }
    pthread_mutex_init(&u->lock, NULL);
    *ret = u;
    return 0;
}

void exec_uids_free(struct exec_uids *u)
{
    if (!u)
        return;
    pthread_mutex_destroy(&u->lock);
    free(u->taken);
    free(u);
}

size_t exec_uids_size(const struct exec_uids *u)
{
    return u->n;
}

int exec_uids_take(struct exec_uids *u, struct exec_user *ret)
{
    int r = -EBUSY;
    pthread_mutex_lock(&u->lock);
    for (size_t k = 0; k < u->n; k++) {
        size_t i = (u->next + k) % u->n;
        if (!u->taken[i]) {
            u->taken[i] = true;
            u->next = (i + 1) % u->n;
            ret->uid = ret->gid = u->first + (unsigned)i;
            r = 0;
            break;
        }
    }
    pthread_mutex_unlock(&u->lock);
    return r;
}

void exec_uids_put(struct exec_uids *u, unsigned uid)
{
    pthread_mutex_lock(&u->lock);
    if (uid >= u->first && uid - u->first < u->n)
        u->taken[uid - u->first] = false;
    pthread_mutex_unlock(&u->lock);
}
