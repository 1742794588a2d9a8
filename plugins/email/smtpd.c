/* smtpd.c - placeholder until the module lands. */
#include <switchboard/plugin.h>

#include "smtpd.h"
