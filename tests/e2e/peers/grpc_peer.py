"""A real gRPC server and client (Debian's grpcio) for the end-to-end tests: no generated code, raw bytes.

  grpc_peer.py serve [--tls CERT KEY]             prints the bound port, then serves test.Echo until killed
  grpc_peer.py call TARGET AUTHORITY [--tls CA]   runs the checks below against TARGET, naming AUTHORITY as the
                                                  host (and, with --tls, as the TLS server name); prints "ok"

test.Echo has a unary method, a server-streaming one and one that fails with a status and details; every
answer carries trailing metadata, so a proxy that loses HTTP/2 trailers fails the checks.
"""
import sys
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "unary"),))
    return b"echo:" + request


def stream(request, context):
    for i in range(3):
        yield b"%d:" % i + request
    context.set_trailing_metadata((("x-trailer", "stream"),))


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def serve(args):
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if args[:1] == ["--tls"]:
        cert, key = open(args[1], "rb").read(), open(args[2], "rb").read()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def call(target, authority, args):
    options = [("grpc.default_authority", authority)]
    if args[:1] == ["--tls"]:
        creds = grpc.ssl_channel_credentials(root_certificates=open(args[1], "rb").read())
        options.append(("grpc.ssl_target_name_override", authority))
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hi", timeout=10)
    assert reply == b"echo:hi", reply
    assert dict(call.trailing_metadata()).get("x-trailer") == "unary", call.trailing_metadata()
    replies = channel.unary_stream("/test.Echo/Stream")(b"x", timeout=10)
    got = list(replies)
    assert got == [b"0:x", b"1:x", b"2:x"], got
    assert dict(replies.trailing_metadata()).get("x-trailer") == "stream", replies.trailing_metadata()
    try:
        channel.unary_unary("/test.Echo/Fail")(b"", timeout=10)
        raise AssertionError("Fail succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        assert e.details() == "no such thing", e.details()
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2:])
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4:])
