/*
 * cli.h - the operator's commands: tenants, agents and platform
 * administrators.  Synchronous libpq against the database the server
 * uses, as its owner (these are operator actions, not tenant requests).
 */
#ifndef SB_CLI_H
#define SB_CLI_H

#include "config.h"

/*
 * Runs "tenant ...", "agent ..." or "admin ..." with the words after the
 * command.  Passwords are read from standard input.  Returns the exit
 * code: 0, 1 (failed) or 2 (usage).
 */
int sb_cli_run(const sb_config_t *cfg, const char *command, int argc, char **argv);

#endif
