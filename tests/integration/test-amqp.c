/* The private RabbitMQ node that tools/test.sh starts: reachable with the orch user and
 * vhost, and a durable quorum queue with publisher confirms round-trips a message. This is
 * the contract the dispatcher and gateway build on. */
#include <criterion/criterion.h>
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "tests/integration/harness.h"

static void die_on_rpc(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        cr_assert_fail("%s failed: reply type %d", what, r.reply_type);
}

Test(amqp, quorum_queue_with_confirms_round_trips)
{
    struct amqp_connection_info ci;
    char *url = strdup(th_env("ORCH_AMQP_URL"));
    cr_assert_eq(amqp_parse_url(url, &ci), AMQP_STATUS_OK);

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    cr_assert_not_null(sock);
    struct timeval tv = {.tv_sec = 10};
    cr_assert_eq(amqp_socket_open_noblock(sock, ci.host, ci.port, &tv), AMQP_STATUS_OK);
    die_on_rpc(
        amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
        "login");
    amqp_channel_open(conn, 1);
    die_on_rpc(amqp_get_rpc_reply(conn), "channel.open");
    amqp_confirm_select(conn, 1);
    die_on_rpc(amqp_get_rpc_reply(conn), "confirm.select");

    uint8_t rnd[6];
    char hex[13], qname[64];
    crypto_random(rnd, sizeof(rnd));
    hex_encode(rnd, sizeof(rnd), hex);
    snprintf(qname, sizeof(qname), "orch.test.%s", hex);

    amqp_table_entry_t arg = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(qname), 0, 1, 0, 0, args);
    die_on_rpc(amqp_get_rpc_reply(conn), "queue.declare (quorum)");

    amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    const char body[] = "{\"job\":\"hello\"}";
    cr_assert_eq(amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(qname), 1, 0,
                                    &props, amqp_cstring_bytes(body)),
                 AMQP_STATUS_OK);
    /* The broker's confirm: basic.ack for delivery tag 1. */
    amqp_frame_t frame;
    struct timeval wait = {.tv_sec = 10};
    cr_assert_eq(amqp_simple_wait_frame_noblock(conn, &frame, &wait), AMQP_STATUS_OK);
    cr_assert_eq(frame.frame_type, AMQP_FRAME_METHOD);
    cr_assert_eq(frame.payload.method.id, AMQP_BASIC_ACK_METHOD, "expected a publisher confirm");

    amqp_rpc_reply_t got = amqp_basic_get(conn, 1, amqp_cstring_bytes(qname), 0);
    die_on_rpc(got, "basic.get");
    cr_assert_eq(got.reply.id, AMQP_BASIC_GET_OK_METHOD, "the queue was empty");
    amqp_message_t msg;
    die_on_rpc(amqp_read_message(conn, 1, &msg, 0), "read message");
    cr_assert_eq(msg.body.len, strlen(body));
    cr_assert(memcmp(msg.body.bytes, body, msg.body.len) == 0);
    amqp_basic_ack(conn, 1, ((amqp_basic_get_ok_t *)got.reply.decoded)->delivery_tag, 0);
    amqp_destroy_message(&msg);

    amqp_queue_delete(conn, 1, amqp_cstring_bytes(qname), 0, 0);
    die_on_rpc(amqp_get_rpc_reply(conn), "queue.delete");
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    free(url);
}
