/* The variadic and va_list functions of the nbdkit plugin ABI, which
 * stable Rust cannot define: each formats its message (glibc's
 * vasprintf, %m included) and hands the string to a hook the Rust side
 * registers with nbdkit_cabi_set_hooks before any plugin is loaded.
 * Everything else a plugin calls is in exports.rs.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void (*hook_error) (const char *);
static void (*hook_debug) (const char *);
static const char *(*hook_intern) (const char *);

void
nbdkit_cabi_set_hooks (void (*error) (const char *),
                       void (*debug) (const char *),
                       const char *(*intern) (const char *))
{
  hook_error = error;
  hook_debug = debug;
  hook_intern = intern;
}

/* Format, restoring errno first so that %m sees the caller's. */
static char *
format (int err, const char *fs, va_list args)
{
  char *s = NULL;
  errno = err;
  if (vasprintf (&s, fs, args) == -1)
    return NULL;
  return s;
}

/* Format and hand to a hook, leaving errno as it was. */
static void
emit (void (*hook) (const char *), const char *fs, va_list args)
{
  int err = errno;
  char *s = format (err, fs, args);
  if (hook)
    hook (s ? s : fs);
  free (s);
  errno = err;
}

void
nbdkit_verror (const char *fs, va_list args)
{
  emit (hook_error, fs, args);
}

/* The variadic form of each va_list function. */
#define VARIADIC(fn, vfn)                       \
  void                                          \
  fn (const char *fs, ...)                      \
  {                                             \
    va_list args;                               \
    va_start (args, fs);                        \
    vfn (fs, args);                             \
    va_end (args);                              \
  }

void
nbdkit_vdebug (const char *fs, va_list args)
{
  emit (hook_debug, fs, args);
}

VARIADIC (nbdkit_error, nbdkit_verror)
VARIADIC (nbdkit_debug, nbdkit_vdebug)

const char *
nbdkit_vprintf_intern (const char *fs, va_list args)
{
  int err = errno;
  char *s = format (err, fs, args);
  const char *r;
  if (s == NULL) {
    errno = ENOMEM;
    nbdkit_error ("nbdkit_printf_intern: %m");
    return NULL;
  }
  r = hook_intern ? hook_intern (s) : NULL;
  free (s);
  errno = err;
  return r;
}

const char *
nbdkit_printf_intern (const char *fs, ...)
{
  va_list args;
  const char *r;
  va_start (args, fs);
  r = nbdkit_vprintf_intern (fs, args);
  va_end (args);
  return r;
}

/* Integers as nbdkit_parse_int(3) documents them: strtol's syntax (base
 * prefixes, leading space, a sign), the whole string, in range. Each
 * failure is one nbdkit_error naming WHAT.
 */
#include <ctype.h>
#include <stdint.h>
#include <limits.h>

static int
check_tail (const char *what, const char *str, const char *end, int err)
{
  if (err != 0) {
    errno = err;
    nbdkit_error ("%s: could not parse number: \"%s\": %m", what, str);
    return -1;
  }
  if (end == str) {
    nbdkit_error ("%s: empty string where we expected a number", what);
    return -1;
  }
  if (*end) {
    nbdkit_error ("%s: could not parse number: \"%s\": trailing garbage",
                  what, str);
    return -1;
  }
  return 0;
}

static int
parse_signed (const char *what, const char *str, long long lo, long long hi,
              long long *r)
{
  char *end;
  int err;
  errno = 0;
  *r = strtoll (str, &end, 0);
  err = errno;
  if (err == 0 && (*r < lo || *r > hi))
    err = ERANGE;
  return check_tail (what, str, end, err);
}

static int
parse_unsigned (const char *what, const char *str, unsigned long long hi,
                unsigned long long *r)
{
  const char *p = str;
  char *end;
  int err;
  while (isspace ((unsigned char) *p))
    p++;
  if (*p == '-') {
    nbdkit_error ("%s: negative numbers are not allowed", what);
    return -1;
  }
  errno = 0;
  *r = strtoull (str, &end, 0);
  err = errno;
  if (err == 0 && *r > hi)
    err = ERANGE;
  return check_tail (what, str, end, err);
}

#define SIGNED(fn, type, lo, hi)                                        \
  int fn (const char *what, const char *str, type *rp)                  \
  {                                                                     \
    long long r;                                                        \
    if (parse_signed (what, str, lo, hi, &r) == -1)                     \
      return -1;                                                        \
    if (rp)                                                             \
      *rp = (type) r;                                                   \
    return 0;                                                           \
  }
#define UNSIGNED(fn, type, hi)                                          \
  int fn (const char *what, const char *str, type *rp)                  \
  {                                                                     \
    unsigned long long r;                                               \
    if (parse_unsigned (what, str, hi, &r) == -1)                       \
      return -1;                                                        \
    if (rp)                                                             \
      *rp = (type) r;                                                   \
    return 0;                                                           \
  }

SIGNED (nbdkit_parse_int, int, INT_MIN, INT_MAX)
SIGNED (nbdkit_parse_int8_t, int8_t, INT8_MIN, INT8_MAX)
SIGNED (nbdkit_parse_int16_t, int16_t, INT16_MIN, INT16_MAX)
SIGNED (nbdkit_parse_int32_t, int32_t, INT32_MIN, INT32_MAX)
SIGNED (nbdkit_parse_int64_t, int64_t, INT64_MIN, INT64_MAX)
UNSIGNED (nbdkit_parse_unsigned, unsigned, UINT_MAX)
UNSIGNED (nbdkit_parse_uint8_t, uint8_t, UINT8_MAX)
UNSIGNED (nbdkit_parse_uint16_t, uint16_t, UINT16_MAX)
UNSIGNED (nbdkit_parse_uint32_t, uint32_t, UINT32_MAX)
UNSIGNED (nbdkit_parse_uint64_t, uint64_t, UINT64_MAX)
