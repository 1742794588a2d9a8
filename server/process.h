/*
 * process.h - the master and its workers.  The master forks the workers,
 * restarts one that dies, rolls them over on SIGHUP (re-reading the
 * configuration) and stops them on SIGTERM/SIGINT.  A worker runs one
 * libuv loop with its own listening socket (SO_REUSEPORT), database pool
 * and HTTP server.
 */
#ifndef SB_PROCESS_H
#define SB_PROCESS_H

#include "config.h"

/*
 * Runs the master until it is told to stop.  Borrows cfg (a reload
 * replaces the master's own copy).  Returns the process exit code.
 */
int sb_master_run(const sb_config_t *cfg);

/*
 * Runs one worker until SIGTERM/SIGINT and its drain complete.  Returns the
 * process exit code: 0 after a clean stop, 1 when it could not start or
 * the shutdown deadline passed.
 */
int sb_worker_run(const sb_config_t *cfg, int metrics_slot);

#endif
