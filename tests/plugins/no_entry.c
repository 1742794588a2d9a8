/*
 * A shared object that is not a plugin: it lacks the entry symbol.
 */
int no_entry_value(void);
int no_entry_value(void)
{
    return 42;
}
