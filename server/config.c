/* config.c: the table of orchd's configuration keys. Adding a key is one line here; the
 * loader, the environment overrides, the error messages and `orchd config` follow. */
#include "server/config.h"

#include <stddef.h>
#include <string.h>

#include "common/log.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define F(field) offsetof(struct orchd_config, field)

const struct conf_field orchd_config_fields[] = {
    {"db.url", CONF_STRING, F(db_url), 1, 4096, "postgresql://orch_app@127.0.0.1:5432/orch", NULL,
     "PostgreSQL connection of the application role (no BYPASSRLS, owns no table)"},
    {"db.migrate_url", CONF_STRING, F(db_migrate_url), 0, 4096, "", NULL,
     "PostgreSQL connection of the schema owner, used by `orchd migrate` (default: db.url)"},
    {"db.pool_size", CONF_INT, F(db_pool_size), 1, 1000, "16", NULL,
     "connections at most in the pool"},
    {"db.connect_timeout", CONF_DURATION, F(db_connect_timeout_ms), 100, 300000, "5s", NULL,
     "time to establish one connection"},
    {"db.acquire_timeout", CONF_DURATION, F(db_acquire_timeout_ms), 1, 300000, "5s", NULL,
     "time to wait for a free pooled connection"},
    {"db.statement_timeout", CONF_DURATION, F(db_statement_timeout_ms), 0, 3600000, "30s", NULL,
     "longest a statement may run (0 = no limit)"},
    {"amqp.url", CONF_STRING, F(amqp_url), 1, 4096, "amqp://guest:guest@127.0.0.1:5672/", NULL,
     "RabbitMQ connection"},
    {"log.level", CONF_ENUM, F(log_level), 0, 0, "info", log_levels,
     "least severe level logged: debug, info, warn or error"},
};

const size_t orchd_config_nfields = sizeof(orchd_config_fields) / sizeof(orchd_config_fields[0]);

int orchd_config_load(struct orchd_config *cfg, const char *path, struct conf_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    return conf_load(orchd_config_fields, orchd_config_nfields, cfg, path, "ORCHD", err);
}

void orchd_config_free(struct orchd_config *cfg)
{
    conf_free(orchd_config_fields, orchd_config_nfields, cfg);
}
