/* Tests for common/id.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"

static uint64_t id_ms(const uint8_t id[16])
{
    uint64_t ms = 0;

    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    return ms;
}

Test(id, version_and_variant)
{
    uint8_t id[16];

    for (int i = 0; i < 100; i++) {
        cr_assert_eq(id_uuid7(id), 0);
        cr_assert_eq(id[6] >> 4, 7, "version nibble");
        cr_assert_eq(id[8] >> 6, 2, "variant 10xx");
    }
}

Test(id, timestamp_is_now)
{
    uint8_t id[16];
    int64_t before = clock_real_ms(), after;

    cr_assert_eq(id_uuid7(id), 0);
    after = clock_real_ms();
    cr_assert_geq(id_ms(id), (uint64_t)before);
    /* The counter may have borrowed a few future milliseconds, never many. */
    cr_assert_leq(id_ms(id), (uint64_t)after + 10);
}

Test(id, monotonic_10000)
{
    uint8_t prev[16], cur[16];
    char ps[ID_STR_LEN], cs[ID_STR_LEN];

    cr_assert_eq(id_uuid7(prev), 0);
    for (int i = 0; i < 10000; i++) {
        cr_assert_eq(id_uuid7(cur), 0);
        cr_assert_gt(memcmp(cur, prev, 16), 0, "id %d not greater than the previous one", i);
        /* Text form sorts the same way. */
        id_format(prev, ps);
        id_format(cur, cs);
        cr_assert_gt(strcmp(cs, ps), 0);
        memcpy(prev, cur, 16);
    }
}

Test(id, str_form)
{
    char s[ID_STR_LEN];

    cr_assert_eq(id_uuid7_str(s), 0);
    cr_assert_eq(strlen(s), 36);
    cr_assert_eq(s[8], '-');
    cr_assert_eq(s[13], '-');
    cr_assert_eq(s[14], '7');
    cr_assert_eq(s[18], '-');
    cr_assert(strchr("89ab", s[19]) != NULL, "variant char %c", s[19]);
    cr_assert_eq(s[23], '-');
    cr_assert(id_is_valid(s));
    for (int i = 0; i < 36; i++)
        cr_assert(strchr("0123456789abcdef-", s[i]) != NULL, "lower-case hex only");
}

Test(id, format_parse_round_trip)
{
    static const uint8_t known[16] = {0x01, 0x9a, 0x2b, 0x3c, 0x4d, 0x5e, 0x7f, 0x60,
                                      0x81, 0x92, 0xa3, 0xb4, 0xc5, 0xd6, 0xe7, 0xf8};
    uint8_t back[16];
    char s[ID_STR_LEN];

    id_format(known, s);
    cr_assert_str_eq(s, "019a2b3c-4d5e-7f60-8192-a3b4c5d6e7f8");
    cr_assert_eq(id_parse(s, back), 0);
    cr_assert_eq(memcmp(back, known, 16), 0);
    cr_assert_eq(id_parse("019A2B3C-4D5E-7F60-8192-A3B4C5D6E7F8", back), 0, "upper case");
    cr_assert_eq(memcmp(back, known, 16), 0);
}

Test(id, parse_rejects_malformed)
{
    static const char *const bad[] = {
        "",
        "019a2b3c4d5e7f608192a3b4c5d6e7f8",
        "019a2b3c-4d5e-7f60-8192-a3b4c5d6e7f",
        "019a2b3c-4d5e-7f60-8192-a3b4c5d6e7f80",
        "019a2b3c-4d5e-7f60-8192_a3b4c5d6e7f8",
        "019a2b3c-4d5e-7f60-8192-a3b4c5d6e7fg",
        "{019a2b3c-4d5e-7f60-8192-a3b4c5d6e7f8}",
        " 019a2b3c-4d5e-7f60-8192-a3b4c5d6e7f8",
        "019a2b3c-4d5e7-f60-8192-a3b4c5d6e7f8",
    };
    uint8_t out[16];

    memset(out, 0x55, sizeof(out));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(id_parse(bad[i], out), -EINVAL, "accepted '%s'", bad[i]);
        cr_assert_not(id_is_valid(bad[i]));
    }
    for (int i = 0; i < 16; i++)
        cr_assert_eq(out[i], 0x55, "out untouched on failure");
    cr_assert_not(id_is_valid(NULL));
}

Test(id, valid_any_version)
{
    cr_assert(id_is_valid("00000000-0000-0000-0000-000000000000"));
    cr_assert(id_is_valid("123e4567-e89b-12d3-a456-426614174000"));
}

#define THREADS        4
#define IDS_PER_THREAD 2500

static uint8_t thread_ids[THREADS * IDS_PER_THREAD][16];

static void *gen_ids(void *arg)
{
    uint8_t(*out)[16] = arg;

    for (int i = 0; i < IDS_PER_THREAD; i++)
        if (id_uuid7(out[i]) < 0)
            return (void *)1;
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

Test(id, unique_across_threads)
{
    pthread_t th[THREADS];
    void *res;

    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, gen_ids, thread_ids[t * IDS_PER_THREAD]), 0);
    for (int t = 0; t < THREADS; t++) {
        cr_assert_eq(pthread_join(th[t], &res), 0);
        cr_assert_null(res);
    }
    /* Each thread's own sequence is increasing. */
    for (int t = 0; t < THREADS; t++)
        for (int i = 1; i < IDS_PER_THREAD; i++)
            cr_assert_gt(memcmp(thread_ids[t * IDS_PER_THREAD + i],
                                thread_ids[t * IDS_PER_THREAD + i - 1], 16),
                         0);
    qsort(thread_ids, THREADS * IDS_PER_THREAD, 16, cmp_id);
    for (int i = 1; i < THREADS * IDS_PER_THREAD; i++)
        cr_assert_neq(memcmp(thread_ids[i], thread_ids[i - 1], 16), 0, "duplicate id");
}
