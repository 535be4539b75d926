/* id.h: UUIDv7 identifiers (RFC 9562): 48-bit ms timestamp, then random bits; sortable
 * by creation time, monotonic within one process even inside one millisecond. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define ID_STR_LEN 37 /* 36 characters + NUL */

/* Fill out with a new UUIDv7. Returns 0 or -EIO when the RNG fails. Thread-safe. */
int id_uuid7(uint8_t out[16]);
/* New UUIDv7 as lower-case canonical text "xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx". */
int id_uuid7_str(char out[ID_STR_LEN]);

void id_format(const uint8_t id[16], char out[ID_STR_LEN]);
/* Parse canonical 8-4-4-4-12 hex (either case). Returns 0 or -EINVAL. */
int id_parse(const char *s, uint8_t out[16]);
/* True when s is a canonical UUID string of any version. */
bool id_is_valid(const char *s);
