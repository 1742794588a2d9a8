/*
 * master.c - the master process: forks workers, restarts those that die,
 * replaces them all on SIGHUP with a freshly read configuration, and
 * stops them on SIGTERM/SIGINT.  It runs no event loop and serves no
 * request: signals are taken synchronously with sigtimedwait, so nothing
 * of the master's state is inherited by a worker's loop.
 */
#include "process.h"
#include "common.h"
#include "log.h"
#include "metrics.h"
#include "plugin/host.h"
#include "secrets.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MASTER_MAX_WORKERS (2 * 128)
#define MASTER_RESTART_DELAY_MS 1000

typedef struct {
    pid_t pid; /* 0: free */
    int slot;  /* metrics slot */
    int generation;
    int retiring; /* sent SIGTERM; not to be restarted */
    uint64_t started_ms;
    uint64_t restart_at_ms; /* pid 0 and non-zero: restart then */
} master_worker_t;

typedef struct {
    sb_config_t cfg;
    sigset_t oldmask;
    master_worker_t workers[MASTER_MAX_WORKERS];
    int generation;
    int stopping;
    int signals_seen;
} master_t;

static void master_spawn(master_t *m, master_worker_t *w)
{
    int slot = w->slot >= 0 ? w->slot : sb_metrics_slot_claim();
    pid_t pid = fork();

    if (pid < 0) {
        sb_log(SB_LOG_ERR, NULL, "could not fork worker: %s", strerror(errno));
        w->pid = 0;
        w->restart_at_ms = sb_now_ms() + MASTER_RESTART_DELAY_MS;
        w->slot = slot;
        return;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
        int rc = sb_worker_run(&m->cfg, slot);
        sb_plugins_unload();
        sb_config_free(&m->cfg);
        exit(rc);
    }
    w->pid = pid;
    w->slot = slot;
    w->generation = m->generation;
    w->retiring = 0;
    w->started_ms = sb_now_ms();
    w->restart_at_ms = 0;
}

static master_worker_t *master_free_record(master_t *m)
{
    for (int i = 0; i < MASTER_MAX_WORKERS; i++) {
        master_worker_t *w = &m->workers[i];
        if (w->pid == 0 && w->restart_at_ms == 0)
            return w;
    }
    return NULL;
}

/* Starts a full generation of workers with the current configuration. */
static void master_spawn_generation(master_t *m)
{
    m->generation++;
    for (int i = 0; i < m->cfg.workers; i++) {
        master_worker_t *w = master_free_record(m);
        if (w == NULL) {
            sb_log(SB_LOG_ERR, NULL, "too many workers; could not start worker %d", i + 1);
            return;
        }
        w->slot = -1;
        master_spawn(m, w);
    }
}

static int master_live_count(const master_t *m)
{
    int n = 0;
    for (int i = 0; i < MASTER_MAX_WORKERS; i++)
        if (m->workers[i].pid > 0)
            n++;
    return n;
}

static void master_signal_workers(master_t *m, int sig, int only_old)
{
    for (int i = 0; i < MASTER_MAX_WORKERS; i++) {
        master_worker_t *w = &m->workers[i];
        if (only_old && w->generation == m->generation)
            continue;
        if (w->pid > 0) {
            w->retiring = 1;
            kill(w->pid, sig);
        } else if (only_old || sig == SIGTERM || sig == SIGKILL) {
            /* A pending restart of a retired worker is cancelled. */
            if (w->restart_at_ms) {
                sb_metrics_slot_release(w->slot);
                w->restart_at_ms = 0;
            }
        }
    }
}

static void master_reap(master_t *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        master_worker_t *w = NULL;
        for (int i = 0; i < MASTER_MAX_WORKERS; i++)
            if (m->workers[i].pid == pid)
                w = &m->workers[i];
        if (w == NULL)
            continue;
        w->pid = 0;
        if (w->retiring || m->stopping) {
            sb_metrics_slot_release(w->slot);
            w->restart_at_ms = 0;
            continue;
        }
        if (WIFSIGNALED(status))
            sb_log(SB_LOG_WARNING, NULL, "worker %d was terminated by signal %d: %s", (int)pid,
                   WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
            sb_log(SB_LOG_WARNING, NULL, "worker %d exited with status %d", (int)pid,
                   WEXITSTATUS(status));
        sb_metrics_slot_release(w->slot);
        /* A worker that dies at once would otherwise be restarted in a tight loop. */
        uint64_t now = sb_now_ms();
        w->restart_at_ms =
            now - w->started_ms < MASTER_RESTART_DELAY_MS ? now + MASTER_RESTART_DELAY_MS : now;
    }
}

static void master_restart_due(master_t *m)
{
    uint64_t now = sb_now_ms();
    for (int i = 0; i < MASTER_MAX_WORKERS; i++) {
        master_worker_t *w = &m->workers[i];
        if (w->pid != 0 || w->restart_at_ms == 0 || w->restart_at_ms > now)
            continue;
        w->slot = sb_metrics_slot_claim();
        master_spawn(m, w);
        if (w->pid > 0)
            sb_log(SB_LOG_INFO, NULL, "started worker %d to replace one that died", (int)w->pid);
    }
}

static void master_reload(master_t *m)
{
    sb_config_t fresh;
    char err[512];

    sb_log(SB_LOG_INFO, NULL, "received SIGHUP, reloading configuration");
    if (sb_config_load(&fresh, m->cfg.config_file, err, sizeof(err)) != 0) {
        sb_log_ex(SB_LOG_ERR, NULL, NULL,
                  "The server keeps running with its previous configuration.", "%s", err);
        return;
    }
    sb_config_free(&m->cfg);
    m->cfg = fresh;
    sb_log_set_level(m->cfg.log_level);
    /* New workers first: with SO_REUSEPORT both generations accept until
     * the old one has drained, so no connection is refused. */
    master_spawn_generation(m);
    master_signal_workers(m, SIGTERM, 1);
}

int sb_master_run(const sb_config_t *cfg)
{
    master_t *m = sb_xcalloc(1, sizeof(*m));
    sigset_t set;
    int rc = 0;

    sb_config_copy(&m->cfg, cfg);
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    sigprocmask(SIG_BLOCK, &set, &m->oldmask);
    signal(SIGPIPE, SIG_IGN);

    if (sb_metrics_init() != 0) {
        sb_log(SB_LOG_FATAL, NULL, "could not map the metrics region");
        rc = 1;
        goto done;
    }
    if (sb_secrets_init(m->cfg.data_dir) != 0 || sb_plugins_load(&m->cfg) != 0) {
        rc = 1;
        goto done;
    }
    sb_log(SB_LOG_INFO, NULL, "switchboard starting %d workers on %s", m->cfg.workers,
           m->cfg.listen);
    master_spawn_generation(m);

    for (;;) {
        if (m->stopping && master_live_count(m) == 0)
            break;
        struct timespec ts = {0, 200 * 1000 * 1000};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGCHLD) {
            master_reap(m);
        } else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
            m->signals_seen++;
            if (!m->stopping)
                sb_log(SB_LOG_INFO, NULL, "received %s, shutting down", strsignal(sig));
            m->stopping = 1;
            /* A second signal (Ctrl-C twice) does not wait for the drain. */
            master_signal_workers(m, m->signals_seen > 1 || sig == SIGQUIT ? SIGKILL : SIGTERM, 0);
        } else if (sig == SIGHUP && !m->stopping) {
            master_reload(m);
        }
        master_reap(m);
        if (!m->stopping)
            master_restart_due(m);
    }
    sb_log(SB_LOG_INFO, NULL, "switchboard stopped");
done:
    sb_plugins_unload();
    sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
    sb_config_free(&m->cfg);
    free(m);
    return rc;
}
