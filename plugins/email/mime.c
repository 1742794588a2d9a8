/* mime.c - placeholder until the module lands. */
#include <switchboard/plugin.h>

#include "mime.h"
