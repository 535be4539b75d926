/* console-assets.h: the admin console's files, bundled at build time by
 * tools/embed-console.py from server/console/ and compiled into orchd (api-console.c
 * serves them under /console/). Types and the generated table only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct console_asset {
    const char *name;  /* "index.html", "app-<hash>.js": one path segment */
    const char *ctype; /* Content-Type */
    const char *etag;  /* the content hash, quoted, as sent in ETag */
    bool immutable;    /* named by its hash: cacheable for ever */
    const unsigned char *data;
    size_t len;
    const unsigned char *gz; /* the gzip copy, or NULL when it would not be smaller */
    size_t gz_len;
};

/* console_nassets entries (0: orchd was built without the console). */
extern const struct console_asset console_assets[];
extern const size_t console_nassets;
