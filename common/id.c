/* id.c: UUIDv7 (RFC 9562) with a monotonic counter in rand_a ("method 1"). */
#include "common/id.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "common/clock.h"
#include "common/crypto.h"

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t id_last_ms = -1;
static uint16_t id_counter; /* 12 bits */

int id_uuid7(uint8_t out[16])
{
    uint8_t rnd[10];
    int64_t now, ms;
    uint16_t counter;

    /* Draw the randomness outside the lock; the counter seed is used only on a new ms. */
    if (crypto_random(rnd, sizeof(rnd)) < 0)
        return -EIO;
    /* The seed's top bit is clear so at least 2048 ids fit in one millisecond. */
    uint16_t seed = (uint16_t)(((rnd[0] & 0x07) << 8) | rnd[1]);

    now = clock_real_ms();
    pthread_mutex_lock(&id_lock);
    if (now > id_last_ms) {
        id_last_ms = now;
        id_counter = seed;
    } else {
        /* Same millisecond, or the wall clock stepped back: keep counting from the last id. */
        id_counter++;
        if (id_counter > 0xfff) {
            /* Counter exhausted: borrow the next millisecond so ordering holds. */
            id_last_ms++;
            id_counter = seed;
        }
    }
    ms = id_last_ms;
    counter = id_counter;
    pthread_mutex_unlock(&id_lock);

    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)((uint64_t)ms >> (40 - 8 * i));
    out[6] = (uint8_t)(0x70 | ((counter >> 8) & 0x0f));
    out[7] = (uint8_t)(counter & 0xff);
    out[8] = (uint8_t)(0x80 | (rnd[2] & 0x3f));
    memcpy(out + 9, rnd + 3, 7);
    return 0;
}

int id_uuid7_str(char out[ID_STR_LEN])
{
    uint8_t id[16];
    int r;

    r = id_uuid7(id);
    if (r < 0)
        return r;
    id_format(id, out);
    return 0;
}

void id_format(const uint8_t id[16], char out[ID_STR_LEN])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 0x0f];
    }
    out[o] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int id_parse(const char *s, uint8_t out[16])
{
    uint8_t tmp[16];
    size_t i = 0;

    if (!s)
        return -EINVAL;
    for (int b = 0; b < 16; b++) {
        int hi, lo;

        if (b == 4 || b == 6 || b == 8 || b == 10) {
            if (s[i] != '-')
                return -EINVAL;
            i++;
        }
        hi = hexval(s[i]);
        if (hi < 0)
            return -EINVAL;
        lo = hexval(s[i + 1]);
        if (lo < 0)
            return -EINVAL;
        tmp[b] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    if (s[i] != '\0')
        return -EINVAL;
    memcpy(out, tmp, sizeof(tmp));
    return 0;
}

bool id_is_valid(const char *s)
{
    uint8_t tmp[16];

    return id_parse(s, tmp) == 0;
}
