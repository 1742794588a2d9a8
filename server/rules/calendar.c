/*
 * calendar.c - business-time arithmetic over working hours and holidays.
 * Every wall-clock-to-instant step goes through GLib (g_date_time_new in the
 * calendar's GTimeZone); this file only walks local dates and adds up
 * intervals.  It keeps no state between calls and allocates only GLib's
 * short-lived GDateTimes.
 */
#include "rules/calendar.h"
#include "common.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>

#define CAL_DAY INT64_C(86400)
#define CAL_WEEK (7 * CAL_DAY)
/*
 * The instants whose local date is inside GLib's years 1..9999 in every
 * zone (offsets stay within a day), with room for the next midnight.
 */
#define CAL_MIN_UNIX (INT64_C(-62135596800) + CAL_DAY)
#define CAL_MAX_UNIX (INT64_C(253402300800) - 2 * CAL_DAY)
#define CAL_TZ_NAME_MAX 64

typedef struct {
    int open, close; /* minutes after local midnight, open < close */
} cal_hours_t;

typedef struct {
    int64_t open, close; /* unix seconds, open <= close */
} cal_span_t;

struct sb_calendar {
    GTimeZone *tz;
    int nhours[7];                                   /* 0 = Monday */
    cal_hours_t hours[7][SB_CALENDAR_MAX_INTERVALS]; /* sorted, disjoint, not touching */
    int64_t week_seconds; /* business seconds of a week with no holiday or DST change */
    uint32_t *holidays;   /* GDate Julian day numbers, sorted, unique */
    size_t nholidays, holidays_cap;
};

/* ===================== Dates and zones ===================== */

/* GDate's Julian day 1 (0001-01-01, proleptic Gregorian) was a Monday. */
static int calendar_weekday(uint32_t jd)
{
    return (int)((jd - 1) % 7);
}

/* Callers have validated the date. */
static uint32_t calendar_julian(int year, int month, int day)
{
    GDate d;
    g_date_clear(&d, 1);
    g_date_set_dmy(&d, (GDateDay)day, (GDateMonth)month, (GDateYear)year);
    return g_date_get_julian(&d);
}

static int calendar_date_valid(int year, int month, int day)
{
    /* Range first: GDate's fields are narrower than int. */
    if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 || day > 31)
        return 0;
    return g_date_valid_dmy((GDateDay)day, (GDateMonth)month, (GDateYear)year);
}

/*
 * Only IANA-shaped names reach GLib: it would also open absolute paths
 * (with a g_critical for a file that is not TZif) and parse POSIX rule
 * strings, neither of which a tenant's setting should be able to name.
 */
static int calendar_tz_name_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > CAL_TZ_NAME_MAX || s[0] == '/' || strstr(s, "..") != NULL)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!g_ascii_isalnum(ch) && ch != '/' && ch != '_' && ch != '-' && ch != '+')
            return 0;
    }
    return 1;
}

/* The instant of local date jd at minute (< 1440), as g_date_time_new places it. */
static int calendar_wall(const sb_calendar_t *c, uint32_t jd, int minute, int64_t *out)
{
    GDate d;
    g_date_clear(&d, 1);
    g_date_set_julian(&d, jd);
    GDateTime *dt = g_date_time_new(c->tz, g_date_get_year(&d), g_date_get_month(&d),
                                    g_date_get_day(&d), minute / 60, minute % 60, 0);
    if (dt == NULL)
        return SB_ERANGE;
    *out = g_date_time_to_unix(dt);
    g_date_time_unref(dt);
    return 0;
}

/* The local date of instant t in the calendar's zone. */
static int calendar_local_date(const sb_calendar_t *c, int64_t t, uint32_t *jd)
{
    GDateTime *utc = g_date_time_new_from_unix_utc(t);
    if (utc == NULL)
        return SB_ERANGE;
    GDateTime *local = g_date_time_to_timezone(utc, c->tz);
    g_date_time_unref(utc);
    if (local == NULL)
        return SB_ERANGE;
    int y, m, d;
    g_date_time_get_ymd(local, &y, &m, &d);
    g_date_time_unref(local);
    *jd = calendar_julian(y, m, d);
    return 0;
}

/* Index of the first holiday >= jd. */
static size_t calendar_holiday_lower(const sb_calendar_t *c, uint32_t jd)
{
    size_t lo = 0, hi = c->nholidays;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->holidays[mid] < jd)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* True when a holiday falls on a date in [from, to). */
static int calendar_holiday_in(const sb_calendar_t *c, uint32_t from, uint32_t to)
{
    size_t i = calendar_holiday_lower(c, from);
    return i < c->nholidays && c->holidays[i] < to;
}

static int calendar_day_off(const sb_calendar_t *c, uint32_t jd)
{
    return c->nhours[calendar_weekday(jd)] == 0 || calendar_holiday_in(c, jd, jd + 1);
}

/* ===================== Building a calendar ===================== */

int sb_calendar_new(const char *tz, sb_calendar_t **out)
{
    GTimeZone *zone;
    if (tz == NULL) {
        zone = g_time_zone_new_utc();
    } else {
        if (!calendar_tz_name_ok(tz))
            return SB_EINVAL;
        /* NULL for an unknown identifier since GLib 2.68. */
        zone = g_time_zone_new_identifier(tz);
        if (zone == NULL)
            return SB_EINVAL;
    }
    sb_calendar_t *c = sb_xcalloc(1, sizeof(*c));
    c->tz = zone;
    *out = c;
    return 0;
}

void sb_calendar_free(sb_calendar_t *c)
{
    if (c == NULL)
        return;
    g_time_zone_unref(c->tz);
    free(c->holidays);
    free(c);
}

const char *sb_calendar_tz(const sb_calendar_t *c)
{
    return g_time_zone_get_identifier(c->tz);
}

static void calendar_week_recount(sb_calendar_t *c)
{
    c->week_seconds = 0;
    for (int wd = 0; wd < 7; wd++)
        for (int i = 0; i < c->nhours[wd]; i++)
            c->week_seconds += (int64_t)(c->hours[wd][i].close - c->hours[wd][i].open) * 60;
}

int sb_calendar_add_hours(sb_calendar_t *c, int weekday, int open_min, int close_min)
{
    if (weekday < 0 || weekday > 6 || open_min < 0 || open_min >= close_min || close_min > 1440)
        return SB_EINVAL;

    /* Merge into a copy so that a day that would overflow stays as it was. */
    cal_hours_t merged[SB_CALENDAR_MAX_INTERVALS + 1];
    cal_hours_t add = {open_min, close_min};
    int n = 0, placed = 0;
    for (int i = 0; i < c->nhours[weekday]; i++) {
        cal_hours_t h = c->hours[weekday][i];
        if (h.close < add.open) {
            merged[n++] = h;
        } else if (h.open > add.close) {
            if (!placed)
                merged[n++] = add;
            placed = 1;
            merged[n++] = h;
        } else {
            add.open = MIN(add.open, h.open);
            add.close = MAX(add.close, h.close);
        }
    }
    if (!placed)
        merged[n++] = add;
    if (n > SB_CALENDAR_MAX_INTERVALS)
        return SB_EINVAL;

    memcpy(c->hours[weekday], merged, (size_t)n * sizeof(merged[0]));
    c->nhours[weekday] = n;
    calendar_week_recount(c);
    return 0;
}

int sb_calendar_add_holiday(sb_calendar_t *c, int year, int month, int day)
{
    if (!calendar_date_valid(year, month, day))
        return SB_EINVAL;
    uint32_t jd = calendar_julian(year, month, day);
    size_t i = calendar_holiday_lower(c, jd);
    if (i < c->nholidays && c->holidays[i] == jd)
        return 0;
    if (c->nholidays == c->holidays_cap) {
        c->holidays_cap = c->holidays_cap ? c->holidays_cap * 2 : 16;
        c->holidays = sb_xrealloc(c->holidays, c->holidays_cap * sizeof(c->holidays[0]));
    }
    memmove(&c->holidays[i + 1], &c->holidays[i], (c->nholidays - i) * sizeof(c->holidays[0]));
    c->holidays[i] = jd;
    c->nholidays++;
    return 0;
}

int sb_calendar_has_hours(const sb_calendar_t *c)
{
    return c != NULL && c->week_seconds > 0;
}

/* ===================== Walking local dates ===================== */

/*
 * A walk over local dates, one day or one plain week at a step.  mid is
 * the instant date jd begins, when have_mid: consecutive working days
 * reuse the previous day's end, so a day costs one g_date_time_new.
 */
typedef struct {
    const sb_calendar_t *c;
    uint32_t jd;
    int have_mid;
    int64_t mid;
    uint32_t week_retry; /* no plain week starts before this date */
} cal_walk_t;

static int calendar_walk_init(cal_walk_t *w, const sb_calendar_t *c, int64_t t)
{
    memset(w, 0, sizeof(*w));
    w->c = c;
    int rc = calendar_local_date(c, t, &w->jd);
    /* The first day is partial, so weeks are only skipped after it. */
    w->week_retry = w->jd + 1;
    return rc;
}

static int calendar_walk_mid(cal_walk_t *w)
{
    if (w->have_mid)
        return 0;
    int rc = calendar_wall(w->c, w->jd, 0, &w->mid);
    w->have_mid = rc == 0;
    return rc;
}

/* Minute (0..1440) of a DST day, as GLib places it; 1440 is the next midnight. */
static int calendar_boundary(const cal_walk_t *w, int minute, int64_t next, int64_t *out)
{
    if (minute == 0) {
        *out = w->mid;
        return 0;
    }
    if (minute == 1440) {
        *out = next;
        return 0;
    }
    return calendar_wall(w->c, w->jd, minute, out);
}

/* Converts date jd's working hours into instants (n spans) and steps to the next date. */
static int calendar_walk_day(cal_walk_t *w, cal_span_t *spans, int *n)
{
    const sb_calendar_t *c = w->c;
    *n = 0;
    if (calendar_day_off(c, w->jd)) {
        w->jd++;
        w->have_mid = 0;
        return 0;
    }
    int64_t next;
    int rc = calendar_walk_mid(w);
    if (rc == 0)
        rc = calendar_wall(c, w->jd + 1, 0, &next);
    if (rc != 0)
        return rc;

    /*
     * A day of exactly 24 hours has no offset change in it (no zone steps
     * there and back within one day), so its wall times are plain offsets
     * from midnight; only DST days ask GLib for every boundary.
     */
    int plain = next - w->mid == CAL_DAY;
    int64_t prev_close = w->mid;
    int wd = calendar_weekday(w->jd);
    const cal_hours_t *h = c->hours[wd];
    for (int i = 0; i < c->nhours[wd]; i++) {
        int64_t open = w->mid + (int64_t)h[i].open * 60;
        int64_t close = w->mid + (int64_t)h[i].close * 60;
        if (!plain) {
            rc = calendar_boundary(w, h[i].open, next, &open);
            if (rc == 0)
                rc = calendar_boundary(w, h[i].close, next, &close);
            if (rc != 0)
                return rc;
        }
        /* GLib moves a time in a gap to the gap's end, which can fold spans together. */
        open = CLAMP(open, prev_close, next);
        close = CLAMP(close, open, next);
        prev_close = close;
        spans[(*n)++] = (cal_span_t){open, close};
    }
    w->jd++;
    w->mid = next;
    return 0;
}

/*
 * Steps over the week from date jd when it is plain: no holiday and exactly
 * 7 * 24 hours long, so it holds week_seconds.  *skipped says whether it
 * did.  A week that has DST in it is not asked about again for 7 days,
 * since asking costs a g_date_time_new.
 */
static int calendar_walk_week(cal_walk_t *w, int *skipped)
{
    *skipped = 0;
    if (w->jd < w->week_retry || calendar_holiday_in(w->c, w->jd, w->jd + 7))
        return 0;
    int64_t mid7;
    int rc = calendar_walk_mid(w);
    if (rc == 0)
        rc = calendar_wall(w->c, w->jd + 7, 0, &mid7);
    if (rc != 0)
        return rc;
    if (mid7 - w->mid != CAL_WEEK) {
        w->week_retry = w->jd + 7;
        return 0;
    }
    w->jd += 7;
    w->mid = mid7;
    *skipped = 1;
    return 0;
}

/* ===================== Business time ===================== */

int sb_calendar_add(const sb_calendar_t *c, int64_t start, int64_t seconds, int64_t *out)
{
    if (seconds < 0 || seconds > SB_DURATION_MAX)
        return SB_EINVAL;
    if (c == NULL) {
        int64_t sum;
        if (__builtin_add_overflow(start, seconds, &sum))
            return SB_ERANGE;
        *out = sum;
        return 0;
    }
    if (c->week_seconds == 0)
        return SB_EINVAL;
    if (start < CAL_MIN_UNIX || start > CAL_MAX_UNIX)
        return SB_ERANGE;
    if (seconds == 0) {
        *out = start;
        return 0;
    }

    cal_walk_t w;
    int rc = calendar_walk_init(&w, c, start);
    if (rc != 0)
        return rc;
    uint32_t last_work = w.jd;
    int64_t left = seconds;
    for (;;) {
        if (w.jd - last_work > SB_CALENDAR_HORIZON_DAYS)
            return SB_EINVAL;
        /* Strictly more than a week left: the result lies in a later day walk. */
        if (left > c->week_seconds) {
            int skipped;
            rc = calendar_walk_week(&w, &skipped);
            if (rc != 0)
                return rc;
            if (skipped) {
                left -= c->week_seconds;
                last_work = w.jd;
                continue;
            }
        }
        cal_span_t spans[SB_CALENDAR_MAX_INTERVALS];
        int n;
        rc = calendar_walk_day(&w, spans, &n);
        if (rc != 0)
            return rc;
        for (int i = 0; i < n; i++) {
            int64_t open = MAX(spans[i].open, start);
            if (spans[i].close <= open)
                continue;
            last_work = w.jd;
            if (left <= spans[i].close - open) {
                *out = open + left;
                return 0;
            }
            left -= spans[i].close - open;
        }
    }
}

int64_t sb_calendar_between(const sb_calendar_t *c, int64_t a, int64_t b)
{
    if (b <= a)
        return 0;
    if (c == NULL) {
        int64_t d;
        return __builtin_sub_overflow(b, a, &d) ? INT64_MAX : d;
    }
    if (c->week_seconds == 0)
        return 0;
    a = CLAMP(a, CAL_MIN_UNIX, CAL_MAX_UNIX);
    b = CLAMP(b, CAL_MIN_UNIX, CAL_MAX_UNIX);
    if (b <= a)
        return 0;

    cal_walk_t w;
    uint32_t last;
    if (calendar_walk_init(&w, c, a) != 0 || calendar_local_date(c, b, &last) != 0)
        return 0; /* not reached: the range is clamped to what GLib represents */
    int64_t total = 0;
    while (w.jd <= last) {
        if (w.jd + 7 <= last) {
            int skipped;
            if (calendar_walk_week(&w, &skipped) != 0)
                break;
            if (skipped) {
                total += c->week_seconds;
                continue;
            }
        }
        cal_span_t spans[SB_CALENDAR_MAX_INTERVALS];
        int n;
        if (calendar_walk_day(&w, spans, &n) != 0)
            break;
        for (int i = 0; i < n; i++) {
            int64_t open = MAX(spans[i].open, a), close = MIN(spans[i].close, b);
            if (close > open)
                total += close - open;
        }
    }
    return total;
}

/* ===================== Parsing values ===================== */

int sb_duration_parse(const char *s, int64_t *out)
{
    static const char units[] = "wdhms";
    static const int64_t unit_seconds[] = {7 * CAL_DAY, CAL_DAY, 3600, 60, 1};
    if (s == NULL || *s == '\0')
        return SB_EINVAL;

    int64_t total = 0;
    size_t next_unit = 0; /* units come in the order of units[], each once */
    const char *p = s;
    while (*p != '\0') {
        if (!g_ascii_isdigit(*p))
            return SB_EINVAL;
        int64_t n = 0;
        for (; g_ascii_isdigit(*p); p++) {
            n = n * 10 + (*p - '0');
            if (n > SB_DURATION_MAX)
                return SB_EINVAL;
        }
        const char *u = *p != '\0' ? strchr(units + next_unit, *p) : NULL;
        if (u == NULL)
            return SB_EINVAL;
        int64_t k = unit_seconds[u - units];
        if (n > (SB_DURATION_MAX - total) / k)
            return SB_EINVAL;
        total += n * k;
        next_unit = (size_t)(u - units) + 1;
        p++;
    }
    *out = total;
    return 0;
}

/* Two ASCII digits at s, or -1. */
static int calendar_digits2(const char *s)
{
    if (!g_ascii_isdigit(s[0]) || !g_ascii_isdigit(s[1]))
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

int sb_clock_parse(const char *s, int *out_min)
{
    if (s == NULL || strlen(s) != 5 || s[2] != ':')
        return SB_EINVAL;
    int h = calendar_digits2(s), m = calendar_digits2(s + 3);
    if (h < 0 || m < 0 || h > 24 || m > 59 || (h == 24 && m != 0))
        return SB_EINVAL;
    *out_min = h * 60 + m;
    return 0;
}

int sb_date_parse(const char *s, int *y, int *m, int *d)
{
    if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return SB_EINVAL;
    int hi = calendar_digits2(s), lo = calendar_digits2(s + 2);
    int month = calendar_digits2(s + 5), day = calendar_digits2(s + 8);
    if (hi < 0 || lo < 0 || month < 0 || day < 0)
        return SB_EINVAL;
    int year = hi * 100 + lo;
    if (!calendar_date_valid(year, month, day))
        return SB_EINVAL;
    *y = year;
    *m = month;
    *d = day;
    return 0;
}
