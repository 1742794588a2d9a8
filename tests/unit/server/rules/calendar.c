/*
 * Unit tests for rules/calendar.c: business-time arithmetic over working
 * hours, holidays and DST in Europe/Riga, and the duration, clock and date
 * parsers.  Expected instants are written out as unix seconds where the
 * exact value matters; elsewhere GLib converts local times for the test.
 * Under ASan, run with G_SLICE=always-malloc: GLib 2.74 hands GDateTimes
 * out of its slice allocator, where LSan cannot see a leaked one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <glib.h>
#include <string.h>

#include "common.h"
#include "rules/calendar.h"

#define H 3600
#define RIGA "Europe/Riga"

/* Local wall time in zone tz as unix seconds, through GLib. */
static int64_t local_time(const char *tz, int y, int mo, int d, int h, int mi)
{
    GTimeZone *z = g_time_zone_new_identifier(tz);
    assert_non_null(z);
    GDateTime *dt = g_date_time_new(z, y, mo, d, h, mi, 0);
    assert_non_null(dt);
    int64_t t = g_date_time_to_unix(dt);
    g_date_time_unref(dt);
    g_time_zone_unref(z);
    return t;
}

static int64_t riga(int y, int mo, int d, int h, int mi)
{
    return local_time(RIGA, y, mo, d, h, mi);
}

static int64_t add_ok(const sb_calendar_t *c, int64_t start, int64_t seconds)
{
    int64_t out = -1;
    assert_int_equal(sb_calendar_add(c, start, seconds, &out), 0);
    return out;
}

/* Every day 00:00-24:00: business time is wall time. */
static sb_calendar_t *calendar_always(const char *tz)
{
    sb_calendar_t *c;
    assert_int_equal(sb_calendar_new(tz, &c), 0);
    for (int wd = 0; wd < 7; wd++)
        assert_int_equal(sb_calendar_add_hours(c, wd, 0, 1440), 0);
    return c;
}

/* The office: Europe/Riga, Monday to Friday 09:00-18:00, Christmas Day 2026 off. */
static int office_setup(void **state)
{
    sb_calendar_t *c;
    assert_int_equal(sb_calendar_new(RIGA, &c), 0);
    for (int wd = 0; wd < 5; wd++)
        assert_int_equal(sb_calendar_add_hours(c, wd, 9 * 60, 18 * 60), 0);
    assert_int_equal(sb_calendar_add_holiday(c, 2026, 12, 25), 0);
    *state = c;
    return 0;
}

static int office_teardown(void **state)
{
    sb_calendar_free(*state);
    return 0;
}

/* ===================== The office calendar ===================== */

static void test_christmas(void **state)
{
    const sb_calendar_t *c = *state;
    /* Thursday 2026-12-24 17:30 EET. */
    int64_t start = 1798126200;
    assert_int_equal(riga(2026, 12, 24, 17, 30), start);

    /* 30 min on Thursday, Friday is a holiday, the weekend is off, 7h30 on Monday. */
    int64_t due = add_ok(c, start, 8 * H);
    assert_int_equal(due, 1798468200); /* Monday 2026-12-28 16:30 EET */
    assert_int_equal(riga(2026, 12, 28, 16, 30), due);
    assert_int_equal(sb_calendar_between(c, start, due), 8 * H);

    /* The holiday is the local date: 00:30 on the 25th in Riga is still the 24th in UTC. */
    assert_int_equal(sb_calendar_between(c, start, riga(2026, 12, 28, 9, 0)), 30 * 60);
    assert_int_equal(sb_calendar_between(c, riga(2026, 12, 25, 0, 30), riga(2026, 12, 26, 0, 0)),
                     0);
}

static void test_start_outside_hours(void **state)
{
    const sb_calendar_t *c = *state;
    int64_t saturday = riga(2026, 12, 19, 10, 0);

    assert_int_equal(add_ok(c, saturday, 1), riga(2026, 12, 21, 9, 0) + 1);
    assert_int_equal(add_ok(c, saturday, H), riga(2026, 12, 21, 10, 0));
    /* No time at all is due at once, even outside hours. */
    assert_int_equal(add_ok(c, saturday, 0), saturday);
    /* Before opening on Monday. */
    assert_int_equal(add_ok(c, riga(2026, 12, 21, 7, 0), 30 * 60), riga(2026, 12, 21, 9, 30));
    /* A target that ends at closing time is due then, not at the next opening. */
    assert_int_equal(add_ok(c, riga(2026, 12, 18, 17, 0), H), riga(2026, 12, 18, 18, 0));
    /* From closing time on Friday, a whole working day is due at Monday's close. */
    assert_int_equal(add_ok(c, riga(2026, 12, 18, 18, 0), 9 * H), riga(2026, 12, 21, 18, 0));
    /* Several weeks, which the walk skips a week at a time: 2 weeks and 1h. */
    assert_int_equal(add_ok(c, riga(2026, 11, 2, 9, 0), 91 * H), riga(2026, 11, 16, 10, 0));
}

static void test_between(void **state)
{
    const sb_calendar_t *c = *state;

    /* Over a weekend: 1h on Friday, 1h on Monday. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 12, 18, 17, 0), riga(2026, 12, 21, 10, 0)),
                     2 * H);
    /* Over the holiday and a weekend: 6h on Thursday, 3h on Monday. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 12, 24, 12, 0), riga(2026, 12, 28, 12, 0)),
                     9 * H);
    /* A plain week. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 11, 30, 0, 0), riga(2026, 12, 7, 0, 0)),
                     45 * H);
    /* An empty or reversed range. */
    int64_t t = riga(2026, 12, 22, 12, 0);
    assert_int_equal(sb_calendar_between(c, t, t), 0);
    assert_int_equal(sb_calendar_between(c, t + H, t), 0);
    /* 2026 has 261 weekdays; Christmas is one.  Both DST changes fall on Sundays. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 1, 1, 0, 0), riga(2027, 1, 1, 0, 0)),
                     260 * 9 * H);
}

/* Whole weeks are skipped in one step; day by day must agree with that. */
static void test_between_chunks(void **state)
{
    const sb_calendar_t *office = *state;
    sb_calendar_t *always = calendar_always(RIGA);
    const sb_calendar_t *cals[] = {office, always};

    for (size_t k = 0; k < SB_ARRAY_SIZE(cals); k++) {
        int64_t from = riga(2026, 1, 1, 13, 17), to = riga(2027, 1, 3, 8, 0);
        int64_t sum = 0;
        for (int64_t t = from; t < to; t += 86400 - 7)
            sum += sb_calendar_between(cals[k], t, MIN(t + 86400 - 7, to));
        assert_int_equal(sb_calendar_between(cals[k], from, to), sum);
    }
    sb_calendar_free(always);
}

/* ===================== DST ===================== */

static void test_dst(void **state)
{
    sb_calendar_t *c = calendar_always(RIGA);

    /* Spring forward on 2026-03-29: 03:00 EET becomes 04:00 EEST. */
    int64_t m29 = riga(2026, 3, 29, 0, 0), m30 = riga(2026, 3, 30, 0, 0);
    assert_int_equal(sb_calendar_between(c, m29, m30), 23 * H);
    assert_int_equal(add_ok(c, m29, 23 * H), m30);
    assert_int_equal(add_ok(c, riga(2026, 3, 28, 12, 0), 36 * H), riga(2026, 3, 30, 1, 0));
    /* Fall back on 2026-10-25: 04:00 EEST becomes 03:00 EET. */
    int64_t o25 = riga(2026, 10, 25, 0, 0), o26 = riga(2026, 10, 26, 0, 0);
    assert_int_equal(sb_calendar_between(c, o25, o26), 25 * H);
    assert_int_equal(add_ok(c, o25, 25 * H), o26);

    /* Long spans cross DST weeks and skip plain ones. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 3, 1, 0, 0), riga(2026, 4, 1, 0, 0)),
                     (31 * 24 - 1) * H);
    assert_int_equal(add_ok(c, riga(2026, 3, 1, 0, 0), (31 * 24 - 1) * H), riga(2026, 4, 1, 0, 0));
    assert_int_equal(add_ok(c, riga(2026, 1, 1, 0, 0), (365 * 24) * H), riga(2027, 1, 1, 0, 0));
    sb_calendar_free(c);
}

/* Boundaries that fall in the gap or the overlap take GLib's choice. */
static void test_dst_boundaries(void **state)
{
    sb_calendar_t *c;
    assert_int_equal(sb_calendar_new(RIGA, &c), 0);
    assert_int_equal(sb_calendar_add_hours(c, 6, 3 * 60 + 30, 5 * 60), 0);

    /* A plain Sunday has 1h30. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 3, 22, 0, 0), riga(2026, 3, 23, 0, 0)),
                     90 * 60);
    /* 03:30 does not exist on 2026-03-29: GLib moves it to the end of the gap, 04:00 EEST. */
    assert_int_equal(riga(2026, 3, 29, 3, 30), riga(2026, 3, 29, 4, 0));
    assert_int_equal(sb_calendar_between(c, riga(2026, 3, 29, 0, 0), riga(2026, 3, 30, 0, 0)), H);
    assert_int_equal(add_ok(c, riga(2026, 3, 29, 0, 0), 1), riga(2026, 3, 29, 4, 0) + 1);
    /* 03:30 happens twice on 2026-10-25: GLib takes the second, EET (01:30 UTC). */
    assert_int_equal(riga(2026, 10, 25, 3, 30), 1792891800);
    assert_int_equal(sb_calendar_between(c, riga(2026, 10, 25, 0, 0), riga(2026, 10, 26, 0, 0)),
                     90 * 60);

    /* 02:00 EEST to 05:00 EET is four hours. */
    assert_int_equal(sb_calendar_add_hours(c, 6, 2 * 60, 5 * 60), 0);
    assert_int_equal(sb_calendar_between(c, riga(2026, 10, 25, 0, 0), riga(2026, 10, 26, 0, 0)),
                     4 * H);
    /* 02:00 EET to 05:00 EEST is two. */
    assert_int_equal(sb_calendar_between(c, riga(2026, 3, 29, 0, 0), riga(2026, 3, 30, 0, 0)),
                     2 * H);
    sb_calendar_free(c);
}

/* ===================== Errors and edge cases ===================== */

static void test_no_hours(void **state)
{
    sb_calendar_t *c;
    int64_t out = 42;
    assert_int_equal(sb_calendar_new(RIGA, &c), 0);
    assert_false(sb_calendar_has_hours(c));
    assert_int_equal(sb_calendar_add(c, riga(2026, 12, 21, 9, 0), H, &out), SB_EINVAL);
    assert_int_equal(out, 42);
    assert_int_equal(sb_calendar_between(c, 0, 2000000000), 0);

    /* Monday 09:00-10:00 only, and every Monday for more than ten years a holiday. */
    assert_int_equal(sb_calendar_add_hours(c, 0, 9 * 60, 10 * 60), 0);
    assert_true(sb_calendar_has_hours(c));
    GDate d;
    g_date_clear(&d, 1);
    g_date_set_dmy(&d, 5, G_DATE_JANUARY, 2026);
    assert_int_equal(g_date_get_weekday(&d), G_DATE_MONDAY);
    for (int i = 0; i < 540; i++) {
        assert_int_equal(sb_calendar_add_holiday(c, g_date_get_year(&d), g_date_get_month(&d),
                                                 g_date_get_day(&d)),
                         0);
        g_date_add_days(&d, 7);
    }
    assert_int_equal(sb_calendar_add(c, riga(2026, 1, 1, 0, 0), H, &out), SB_EINVAL);
    assert_int_equal(out, 42);
    /* The first Monday after them still counts. */
    int64_t after = riga(g_date_get_year(&d), g_date_get_month(&d), g_date_get_day(&d), 10, 0);
    assert_int_equal(add_ok(c, riga(2035, 1, 1, 0, 0), H), after);
    sb_calendar_free(c);
}

static void test_zones(void **state)
{
    sb_calendar_t *c = (sb_calendar_t *)0x1;
    const char *bad[] = {"Mars/Olympus_Mons",
                         "",
                         "Europe/Rgia",
                         "/etc/passwd",
                         "../../etc/passwd",
                         ":Europe/Riga",
                         "EST5EDT,M3.2.0,M11.1.0",
                         "+02:00"};
    for (size_t i = 0; i < SB_ARRAY_SIZE(bad); i++)
        assert_int_equal(sb_calendar_new(bad[i], &c), SB_EINVAL);
    assert_ptr_equal(c, (sb_calendar_t *)0x1);

    assert_int_equal(sb_calendar_new(NULL, &c), 0);
    assert_string_equal(sb_calendar_tz(c), "UTC");
    assert_int_equal(sb_calendar_add_hours(c, 0, 9 * 60, 17 * 60), 0);
    /* 1970-01-01 was a Thursday; the first Monday is the 5th. */
    assert_int_equal(add_ok(c, 0, H), 4 * 86400 + 10 * H);
    sb_calendar_free(c);

    assert_int_equal(sb_calendar_new("America/New_York", &c), 0);
    assert_string_equal(sb_calendar_tz(c), "America/New_York");
    sb_calendar_free(c);
    sb_calendar_free(NULL);
}

static void test_null_calendar(void **state)
{
    int64_t out = 0;
    assert_int_equal(add_ok(NULL, 1000, 500), 1500);
    assert_int_equal(add_ok(NULL, 1000, 0), 1000);
    assert_int_equal(sb_calendar_add(NULL, 0, -1, &out), SB_EINVAL);
    assert_int_equal(sb_calendar_add(NULL, INT64_MAX - 5, 10, &out), SB_ERANGE);
    assert_int_equal(out, 0);
    assert_int_equal(sb_calendar_add(NULL, 0, SB_DURATION_MAX + 1, &out), SB_EINVAL);
    assert_int_equal(sb_calendar_between(NULL, 100, 250), 150);
    assert_int_equal(sb_calendar_between(NULL, 250, 100), 0);
    assert_true(sb_calendar_between(NULL, INT64_MIN, INT64_MAX) == INT64_MAX);
    assert_false(sb_calendar_has_hours(NULL));
}

/* Monday to Friday dates among n days from year-month-day, counted by GLib. */
static int64_t weekdays(int year, int month, int day, int n)
{
    GDate d;
    int64_t count = 0;
    g_date_clear(&d, 1);
    g_date_set_dmy(&d, day, month, year);
    for (int i = 0; i < n; i++, g_date_add_days(&d, 1))
        count += g_date_get_weekday(&d) <= G_DATE_FRIDAY;
    return count;
}

static void test_range(void **state)
{
    const sb_calendar_t *c = *state;
    int64_t out = 42;
    /* Outside GLib's years 1..9999. */
    assert_int_equal(sb_calendar_add(c, INT64_MAX, H, &out), SB_ERANGE);
    assert_int_equal(sb_calendar_add(c, INT64_MIN, H, &out), SB_ERANGE);
    /* Running off the end of year 9999. */
    assert_int_equal(sb_calendar_add(c, riga(9999, 12, 1, 0, 0), 500 * H, &out), SB_ERANGE);
    assert_int_equal(out, 42);
    assert_int_equal(sb_calendar_add(c, 0, -1, &out), SB_EINVAL);
    assert_int_equal(sb_calendar_add(c, 0, SB_DURATION_MAX + 1, &out), SB_EINVAL);
    /* The longest target is accepted. */
    assert_int_equal(sb_calendar_add(c, 0, SB_DURATION_MAX, &out), 0);
    assert_int_equal(sb_calendar_between(c, 0, out), SB_DURATION_MAX);
    /* Ranges are clamped to 0001-01-02 .. 9999-12-30 UTC. */
    assert_int_equal(sb_calendar_between(c, INT64_MIN, riga(1, 3, 1, 0, 0)),
                     weekdays(1, 1, 2, 58) * 9 * H);
    assert_int_equal(sb_calendar_between(c, riga(9999, 12, 1, 0, 0), INT64_MAX),
                     weekdays(9999, 12, 1, 29) * 9 * H);
}

static void test_add_hours(void **state)
{
    sb_calendar_t *c;
    assert_int_equal(sb_calendar_new(NULL, &c), 0);
    /* 2026-11-30 was a Monday; one day of it in UTC. */
    int64_t mon = local_time("UTC", 2026, 11, 30, 0, 0), tue = mon + 86400;

    assert_int_equal(sb_calendar_add_hours(c, -1, 0, 60), SB_EINVAL);
    assert_int_equal(sb_calendar_add_hours(c, 7, 0, 60), SB_EINVAL);
    assert_int_equal(sb_calendar_add_hours(c, 0, -1, 60), SB_EINVAL);
    assert_int_equal(sb_calendar_add_hours(c, 0, 60, 60), SB_EINVAL);
    assert_int_equal(sb_calendar_add_hours(c, 0, 120, 60), SB_EINVAL);
    assert_int_equal(sb_calendar_add_hours(c, 0, 0, 1441), SB_EINVAL);
    assert_false(sb_calendar_has_hours(c));

    /* Overlapping and touching intervals merge. */
    assert_int_equal(sb_calendar_add_hours(c, 0, 9 * 60, 12 * 60), 0);
    assert_int_equal(sb_calendar_add_hours(c, 0, 11 * 60, 13 * 60), 0);
    assert_int_equal(sb_calendar_between(c, mon, tue), 4 * H);
    assert_int_equal(sb_calendar_add_hours(c, 0, 13 * 60, 14 * 60), 0);
    assert_int_equal(sb_calendar_add_hours(c, 0, 9 * 60, 10 * 60), 0);
    assert_int_equal(sb_calendar_between(c, mon, tue), 5 * H);
    assert_int_equal(add_ok(c, mon, 5 * H), mon + 14 * H);

    /* Eight separate intervals fit; a ninth does not, and leaves the day as it was. */
    for (int i = 0; i < 8; i++)
        assert_int_equal(sb_calendar_add_hours(c, 1, i * 120, i * 120 + 60), 0);
    assert_int_equal(sb_calendar_add_hours(c, 1, 1380, 1440), SB_EINVAL);
    assert_int_equal(sb_calendar_between(c, tue, tue + 86400), 8 * H);
    /* One interval over all of them leaves one. */
    assert_int_equal(sb_calendar_add_hours(c, 1, 0, 1440), 0);
    assert_int_equal(sb_calendar_add_hours(c, 1, 60, 120), 0);
    assert_int_equal(sb_calendar_between(c, tue, tue + 86400), 24 * H);
    sb_calendar_free(c);
}

static void test_add_holiday(void **state)
{
    sb_calendar_t *c;
    assert_int_equal(sb_calendar_new(RIGA, &c), 0);
    assert_int_equal(sb_calendar_add_holiday(c, 2026, 2, 29), SB_EINVAL);
    assert_int_equal(sb_calendar_add_holiday(c, 2024, 2, 29), 0);
    assert_int_equal(sb_calendar_add_holiday(c, 2024, 2, 29), 0);
    assert_int_equal(sb_calendar_add_holiday(c, 2026, 13, 1), SB_EINVAL);
    assert_int_equal(sb_calendar_add_holiday(c, 2026, 0, 1), SB_EINVAL);
    assert_int_equal(sb_calendar_add_holiday(c, 2026, 4, 31), SB_EINVAL);
    assert_int_equal(sb_calendar_add_holiday(c, 0, 1, 1), SB_EINVAL);
    assert_int_equal(sb_calendar_add_holiday(c, 10000, 1, 1), SB_EINVAL);
    assert_int_equal(sb_calendar_add_holiday(c, 2026, 1, 256 + 1), SB_EINVAL);
    sb_calendar_free(c);
}

/* ===================== Parsers ===================== */

static void test_duration_parse(void **state)
{
    static const struct {
        const char *s;
        int64_t seconds;
    } good[] = {
        {"30m", 1800},
        {"4h", 14400},
        {"2d", 172800},
        {"1h30m", 5400},
        {"45s", 45},
        {"1w", 604800},
        {"1w2d3h4m5s", 788645},
        {"0s", 0},
        {"90m", 5400},
        {"3653d", SB_DURATION_MAX},
        {"87672h", SB_DURATION_MAX},
        {"007m", 420},
    };
    static const char *bad[] = {"",
                                "5",
                                "h",
                                "-1h",
                                "+1h",
                                "1x",
                                "1h 30m",
                                " 1h",
                                "1h ",
                                "1H",
                                "30m1h",
                                "1h1h",
                                "1.5h",
                                "3654d",
                                "87672h1s",
                                "99999999999h",
                                "99999999999999999999999999s",
                                "1hm"};
    for (size_t i = 0; i < SB_ARRAY_SIZE(good); i++) {
        int64_t out = -1;
        assert_int_equal(sb_duration_parse(good[i].s, &out), 0);
        assert_int_equal(out, good[i].seconds);
    }
    for (size_t i = 0; i < SB_ARRAY_SIZE(bad); i++) {
        int64_t out = -1;
        assert_int_equal(sb_duration_parse(bad[i], &out), SB_EINVAL);
        assert_int_equal(out, -1);
    }
    int64_t out;
    assert_int_equal(sb_duration_parse(NULL, &out), SB_EINVAL);
}

static void test_clock_parse(void **state)
{
    int m = -1;
    assert_int_equal(sb_clock_parse("09:00", &m), 0);
    assert_int_equal(m, 540);
    assert_int_equal(sb_clock_parse("00:00", &m), 0);
    assert_int_equal(m, 0);
    assert_int_equal(sb_clock_parse("23:59", &m), 0);
    assert_int_equal(m, 1439);
    assert_int_equal(sb_clock_parse("24:00", &m), 0);
    assert_int_equal(m, 1440);
    static const char *bad[] = {"24:01", "25:00", "9:00",  "09:60", "0900", "09:00 ",
                                "",      "ab:cd", "09-00", "-1:00", "09:0"};
    for (size_t i = 0; i < SB_ARRAY_SIZE(bad); i++)
        assert_int_equal(sb_clock_parse(bad[i], &m), SB_EINVAL);
    assert_int_equal(sb_clock_parse(NULL, &m), SB_EINVAL);
}

static void test_date_parse(void **state)
{
    int y = 0, m = 0, d = 0;
    assert_int_equal(sb_date_parse("2026-12-25", &y, &m, &d), 0);
    assert_true(y == 2026 && m == 12 && d == 25);
    assert_int_equal(sb_date_parse("2024-02-29", &y, &m, &d), 0);
    assert_true(y == 2024 && m == 2 && d == 29);
    static const char *bad[] = {"2026-02-29", "0000-01-01", "2026-1-01",  "2026/12/25",
                                "2026-13-01", "2026-12-32", "",           "2026-12-25x",
                                "2026-00-10", "20261225",   "2026-12-2a", " 2026-12-25"};
    for (size_t i = 0; i < SB_ARRAY_SIZE(bad); i++)
        assert_int_equal(sb_date_parse(bad[i], &y, &m, &d), SB_EINVAL);
    assert_true(y == 2024 && m == 2 && d == 29);
}

/* ===================== Properties and speed ===================== */

/* add(start, between(start, x)) == x whenever the second before x is business time. */
static void round_trips(const sb_calendar_t *c, int64_t from, int64_t to)
{
    for (int64_t start = from; start < to; start += 97 * 60 + 13) {
        for (int64_t x = start + 1; x < start + 20 * 86400; x += 4111) {
            if (sb_calendar_between(c, x - 1, x) != 1)
                continue;
            assert_int_equal(add_ok(c, start, sb_calendar_between(c, start, x)), x);
        }
        int64_t far = start + 200 * 86400 + 12345;
        if (sb_calendar_between(c, far - 1, far) == 1)
            assert_int_equal(add_ok(c, start, sb_calendar_between(c, start, far)), far);
    }
}

static void test_round_trip(void **state)
{
    const sb_calendar_t *office = *state;
    round_trips(office, riga(2026, 12, 18, 0, 0), riga(2026, 12, 29, 0, 0));
    round_trips(office, riga(2026, 3, 26, 0, 0), riga(2026, 3, 31, 0, 0));

    sb_calendar_t *always = calendar_always(RIGA);
    round_trips(always, riga(2026, 10, 23, 0, 0), riga(2026, 10, 27, 0, 0));
    sb_calendar_free(always);

    /* Intervals around the DST changes on Sundays, and two a day elsewhere. */
    sb_calendar_t *odd;
    assert_int_equal(sb_calendar_new(RIGA, &odd), 0);
    assert_int_equal(sb_calendar_add_hours(odd, 6, 2 * 60 + 30, 3 * 60 + 15), 0);
    assert_int_equal(sb_calendar_add_hours(odd, 6, 3 * 60 + 45, 4 * 60 + 30), 0);
    assert_int_equal(sb_calendar_add_hours(odd, 2, 8 * 60, 12 * 60), 0);
    assert_int_equal(sb_calendar_add_hours(odd, 2, 13 * 60, 24 * 60), 0);
    round_trips(odd, riga(2026, 3, 25, 0, 0), riga(2026, 3, 30, 0, 0));
    round_trips(odd, riga(2026, 10, 21, 0, 0), riga(2026, 10, 26, 0, 0));
    sb_calendar_free(odd);
}

/*
 * SLA targets are computed for every ticket event: the usual ones (minutes
 * to a few days) must cost microseconds, not milliseconds.  The bound is
 * loose enough for sanitizer builds.
 */
static void test_speed(void **state)
{
    const sb_calendar_t *c = *state;
    static const int64_t targets[] = {30 * 60, 4 * H, 8 * H, 2 * 86400, 5 * 86400};
    int64_t start = riga(2026, 1, 1, 0, 0), sink = 0;
    uint64_t t0 = sb_now_ns();
    for (int i = 0; i < 100000; i++) {
        sink += add_ok(c, start, targets[i % SB_ARRAY_SIZE(targets)]);
        start += 7919;
    }
    uint64_t elapsed_ms = (sb_now_ns() - t0) / 1000000;
    assert_true(sink > 0);
    assert_true(elapsed_ms < 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_christmas, office_setup, office_teardown),
        cmocka_unit_test_setup_teardown(test_start_outside_hours, office_setup, office_teardown),
        cmocka_unit_test_setup_teardown(test_between, office_setup, office_teardown),
        cmocka_unit_test_setup_teardown(test_between_chunks, office_setup, office_teardown),
        cmocka_unit_test(test_dst),
        cmocka_unit_test(test_dst_boundaries),
        cmocka_unit_test(test_no_hours),
        cmocka_unit_test(test_zones),
        cmocka_unit_test(test_null_calendar),
        cmocka_unit_test_setup_teardown(test_range, office_setup, office_teardown),
        cmocka_unit_test(test_add_hours),
        cmocka_unit_test(test_add_holiday),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_clock_parse),
        cmocka_unit_test(test_date_parse),
        cmocka_unit_test_setup_teardown(test_round_trip, office_setup, office_teardown),
        cmocka_unit_test_setup_teardown(test_speed, office_setup, office_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
