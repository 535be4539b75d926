/* gw-hash.c: hashing of agent ids for the gateway's tables (see gateway-internal.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/gateway-internal.h"

uint32_t gw_hash_id(const char *id)
{
    /* FNV-1a over the whole id: uuid7 ids made close together share their leading
     * (timestamp) digits, so every character has to count. */
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

int gw_idindex_init(struct gw_idindex *x, uint32_t max_entries)
{
    uint32_t n = 16;
    while (n < 2 * max_entries)
        n *= 2;
    x->slots = malloc(sizeof(*x->slots) * n);
    if (!x->slots)
        return -ENOMEM;
    x->mask = n - 1;
    gw_idindex_clear(x);
    return 0;
}

void gw_idindex_free(struct gw_idindex *x)
{
    free(x->slots);
    x->slots = NULL;
}

void gw_idindex_clear(struct gw_idindex *x)
{
    memset(x->slots, 0xff, sizeof(*x->slots) * ((size_t)x->mask + 1)); /* all -1 */
}

/* Linear probing: the table is at most half full, so a probe ends soon at an empty slot. */
int32_t gw_idindex_find(const struct gw_idindex *x, const char *id, const void *keys, size_t stride)
{
    for (uint32_t i = gw_hash_id(id) & x->mask;; i = (i + 1) & x->mask) {
        int32_t pos = x->slots[i];
        if (pos < 0)
            return -1;
        if (strcmp((const char *)keys + (size_t)pos * stride, id) == 0)
            return pos;
    }
}

void gw_idindex_put(struct gw_idindex *x, const char *id, int32_t pos)
{
    uint32_t i = gw_hash_id(id) & x->mask;
    while (x->slots[i] >= 0)
        i = (i + 1) & x->mask;
    x->slots[i] = pos;
}
