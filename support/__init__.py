"""What the tests, the benchmarks and the chaos runs share, one way each: a running stack and a client of it.

    from support import client, stack
    st = stack.start(extra_env={"RPC_TIMEOUT": "5"})   # a broker vhost, a store, every deploy/Procfile process
    admin = client.admin_token(st)                      # tokens, identities, members, unions: support/client.py
    stack.wait_for(lambda: st.db("notify").notifications.count_documents({}), timeout=10, what="an inbox entry")
    st.stop()

``stack.start`` starts what ``make run`` starts, through ``deploy/stack.py`` (the store too), each stack on its own
vhost, database prefix and gateway port, so several run side by side. Given ``amqp_uri`` / ``mongo_uri`` it uses
that broker vhost / store instead (the test suite shares one store for the session; the nameko plugin makes vhosts).
"""
