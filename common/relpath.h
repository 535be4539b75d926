/* relpath.h: checking a path that names a file inside a directory we unpacked (a package's
 * entrypoint), so that it can neither leave the directory nor need quoting in a shell. */
#pragma once

#include <stdbool.h>

#define RELPATH_MAX 1024

/* s is a relative path of A-Z a-z 0-9 _ . - / characters, at most RELPATH_MAX bytes, with
 * no empty, "." or ".." segment and no leading or trailing '/'. */
bool relpath_is_safe(const char *s);
