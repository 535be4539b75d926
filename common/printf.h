/* printf.h: ORCH_PRINTF(fmt, first), the printf format check on our own printf-like
 * functions. mingw-w64's gcc reads the archetype "printf" as msvcrt's (no %zu, %lld); the
 * Windows build uses mingw's C99 stdio (__USE_MINGW_ANSI_STDIO), checked as gnu_printf. */
#pragma once

#ifdef _WIN32
#define ORCH_PRINTF(fmt, first) __attribute__((format(gnu_printf, fmt, first)))
#else
#define ORCH_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#endif
