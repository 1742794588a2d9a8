/*
 * calendar.h - business calendars for SLA rules: working hours per weekday
 * and holidays in one IANA time zone, and the arithmetic "when is N
 * business seconds after t" / "how much business time lies between a and b".
 * Time-zone work is GLib's (GTimeZone, GDateTime).  Not for parsing rule
 * configuration beyond the small value parsers at the end.
 */
#ifndef SB_RULES_CALENDAR_H
#define SB_RULES_CALENDAR_H

#include <stdint.h>

/* Working intervals a weekday may have (after merging). */
#define SB_CALENDAR_MAX_INTERVALS 8

/* The longest duration anything here accepts: ten years, leap days included. */
#define SB_DURATION_MAX (INT64_C(3653) * 86400)

/*
 * How far sb_calendar_add looks for the next business second before it
 * gives up (holidays covering everything).
 */
#define SB_CALENDAR_HORIZON_DAYS 3660

/*
 * A business calendar.  Built once (new, add_hours, add_holiday) and then
 * read only: any number of threads may call sb_calendar_add and
 * sb_calendar_between on the same calendar at once, as long as nobody
 * changes it meanwhile.  Nothing here logs or does I/O; any process, any
 * thread.
 */
typedef struct sb_calendar sb_calendar_t;

/*
 * Creates a calendar in the IANA zone tz ("Europe/Riga"; NULL means UTC)
 * with no working hours yet.  Copies tz.  Returns 0 and *out (the caller
 * frees it with sb_calendar_free), or SB_EINVAL for an unknown zone or a
 * name that is not zone-shaped (paths, POSIX rule strings with ',' or '.').
 * GLib also takes POSIX-style names without rules ("ABC5": five hours west
 * of UTC, no DST); they pass.
 */
int sb_calendar_new(const char *tz, sb_calendar_t **out);

/* Frees c and everything it owns.  NULL is a no-op. */
void sb_calendar_free(sb_calendar_t *c);

/*
 * Adds working hours [open_min, close_min) on weekday (0 = Monday .. 6 =
 * Sunday), in minutes after local midnight, 0 <= open_min < close_min <=
 * 1440.  Intervals that overlap or touch one already added are merged into
 * it, so the day keeps a sorted list of disjoint intervals.  Returns 0, or
 * SB_EINVAL for a bad weekday or interval, or when the day would have more
 * than SB_CALENDAR_MAX_INTERVALS intervals after merging (c is then
 * unchanged).
 */
int sb_calendar_add_hours(sb_calendar_t *c, int weekday, int open_min, int close_min);

/*
 * Makes the whole local date year-month-day a day off.  Adding the same
 * date twice is harmless.  Returns 0, or SB_EINVAL for an invalid date
 * (years 1..9999).
 */
int sb_calendar_add_holiday(sb_calendar_t *c, int year, int month, int day);

/* True (1) when the calendar has at least one working interval, else 0 (also for NULL). */
int sb_calendar_has_hours(const sb_calendar_t *c);

/* Returns the zone's identifier as GLib reports it.  Borrowed from c. */
const char *sb_calendar_tz(const sb_calendar_t *c);

/*
 * Sets *out to the earliest instant (unix seconds) at which `seconds` of
 * business time have elapsed since `start`; c == NULL means 24/7 (plain
 * addition).  A start outside working hours counts from the next opening;
 * seconds == 0 gives start itself; a target that ends exactly at a closing
 * time gives that closing time, not the next opening.  Working intervals
 * are wall-clock times of the calendar's zone: a DST day has 23 or 25
 * hours, and a boundary that falls in a DST gap or overlap is placed where
 * g_date_time_new puts it (GLib 2.74: the end of the gap; the later,
 * standard-time instant of the overlap).
 *
 * Returns 0; SB_EINVAL when seconds is negative or above SB_DURATION_MAX,
 * the calendar has no hours, or no business time is found within
 * SB_CALENDAR_HORIZON_DAYS; SB_ERANGE when start or the result lies
 * outside the years 1..9999 (or start + seconds overflows, for c == NULL).
 * *out is untouched on error.  Typical SLA targets (minutes to days) cost
 * a few microseconds: one g_date_time_new per working day walked, one per
 * week skipped.
 */
int sb_calendar_add(const sb_calendar_t *c, int64_t start, int64_t seconds, int64_t *out);

/*
 * Returns the business seconds in [a, b): 0 when b <= a or the calendar
 * has no hours; b - a when c == NULL (INT64_MAX if that overflows).  The
 * range is clamped to the years 1..9999.  The inverse of sb_calendar_add:
 * sb_calendar_add(c, a, sb_calendar_between(c, a, x)) == x when x lies
 * inside working hours (after an opening, up to and including a close).
 * The cost grows with the range: one g_date_time_new per plain week, and
 * per working day in weeks with a holiday or a DST change (a year takes tens
 * of microseconds; the whole clamped range about a second).
 */
int64_t sb_calendar_between(const sb_calendar_t *c, int64_t a, int64_t b);

/*
 * Parses a duration: one or more <number><unit> groups with units w (7
 * days), d (24 hours), h, m and s, each unit at most once and in that order
 * ("30m", "4h", "2d", "1h30m", "45s", "1w2d").  No sign, spaces or
 * fractions; the total may not exceed SB_DURATION_MAX.  Returns 0 and
 * *out in seconds, or SB_EINVAL (*out untouched).
 */
int sb_duration_parse(const char *s, int64_t *out);

/*
 * Parses a wall-clock time "HH:MM" (two digits each, 00:00 .. 24:00) into
 * minutes after midnight.  Returns 0 and *out_min, or SB_EINVAL.
 */
int sb_clock_parse(const char *s, int *out_min);

/*
 * Parses a date "YYYY-MM-DD" (exactly that shape, a real date validated by
 * GLib, years 0001..9999).  Returns 0 and *y, *m, *d, or SB_EINVAL.
 */
int sb_date_parse(const char *s, int *y, int *m, int *d);

#endif
