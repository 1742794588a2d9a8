/*
 * switchboard/plugin.h - the only header a Switchboard channel plugin
 * includes.  It defines the result codes that the server and its plugins
 * share and the plugin ABI version.  Nothing from server/ is reachable
 * through it.
 */
#ifndef SWITCHBOARD_PLUGIN_H
#define SWITCHBOARD_PLUGIN_H

/*
 * ABI version.  A host refuses a plugin built for another major version,
 * or for a minor version newer than its own.
 */
#define SB_PLUGIN_ABI_MAJOR 1
#define SB_PLUGIN_ABI_MINOR 0

/*
 * Result codes.  Every call returns 0 or one of these (all negative).
 * SB_AGAIN: not done yet (a callback follows) or retry later.
 * SB_DECLINED: not mine, let the next handler try.
 */
#define SB_ERRNO_MAP(XX)                           \
    XX(AGAIN, -1, "operation in progress")         \
    XX(DECLINED, -2, "declined")                   \
    XX(EINVAL, -22, "invalid argument")            \
    XX(ENOMEM, -12, "out of memory")               \
    XX(ENOENT, -2002, "not found")                 \
    XX(ERANGE, -34, "value out of range")          \
    XX(EIO, -5, "input/output error")              \
    XX(ETIMEDOUT, -110, "timed out")               \
    XX(EUNAVAILABLE, -2001, "service unavailable") \
    XX(EDB, -2003, "database error")               \
    XX(ECLOSED, -2004, "closed")                   \
    XX(EBUSY, -16, "busy")                         \
    XX(ETOOBIG, -27, "too large")                  \
    XX(ESYNTAX, -2005, "syntax error")

enum {
    SB_OK = 0,
#define XX(name, val, msg) SB_##name = (val),
    SB_ERRNO_MAP(XX)
#undef XX
};

#endif
