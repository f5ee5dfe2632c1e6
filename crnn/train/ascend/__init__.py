"""Ascend NPU launch: one training process per NPU, joined into one HCCL group.

``crnn launch-npu [options] -- COMMAND ...`` runs COMMAND once per local NPU and goes like this:

1. Local devices: ``--devices`` ("0-7", "0,2,4", "0-3,6") or, in a Kubernetes pod, the Ascend device plugin's
   ``ASCEND_VISIBLE_DEVICES``. These are physical ids (``/dev/davinciN``, ``address_N`` in /etc/hccn.conf,
   ``device_id`` in a rank table). A process picks its NPU by *logical* id (``ASCEND_DEVICE_ID``): in a container
   that holds only the visible devices the runtime numbers them 0..n-1 in order; on a bare host logical is physical.
2. Who is which rank, from the first of:

   a. ``--rank-table PATH``: an existing v1.0 table, e.g. the ``hccl.json`` Volcano mounts from the
      ``rings-config-<job>`` ConfigMap (commonly /user/serverid/devindex/config/hccl.json) or one the ascend-operator
      writes. It says ``"status": "initializing"`` until every pod is placed, so the launcher polls until
      "completed". With several servers this server's entry is found by ``--server-id`` or this host's IP.
   b. The ascend-operator's ``CM_*`` variables (AscendJob, ``mindxdl.gitee.com/v1``): the adapter then forms the
      group through the chief at ``CM_CHIEF_IP:CM_CHIEF_PORT`` by itself and must not also see RANK_TABLE_FILE,
      RANK_ID or RANK_SIZE. So the launcher writes no table, passes the ``CM_*`` variables through unchanged and adds
      only the device ids (and ``CRNN_LOCAL_RANK``, for ``NpuContext``).
   c. Otherwise (one server): a table is built from /etc/hccn.conf's device IPs and written atomically.

3. Launch: one process per local device with RANK_SIZE, RANK_ID, ASCEND_DEVICE_ID, DEVICE_ID, RANK_TABLE_FILE and
   JOB_ID. Each rank's output is prefixed with ``[rank N]`` or written to ``<log-dir>/rank-N.log``. When a rank fails
   the others are stopped (SIGTERM, then SIGKILL after a grace period), because they would otherwise hang in their
   next collective waiting for it, and the launcher exits with the failed rank's code. SIGTERM/SIGINT sent to the
   launcher (a pod being deleted, Ctrl-C) are forwarded to every rank.

Inside each rank, ``open_npu()`` opens the NPU through ``npu_device`` (the TF 2.x adapter, which reads the variables
above), and ``NpuContext.from_env()`` says which rank this process is, for sharding data and picking the one rank
that writes checkpoints.

The modules: ``rank_table`` (hccn.conf, device lists, rank tables, every local rank's environment), ``launcher`` (the
rank processes) and ``context`` (inside a rank: ``open_npu``, ``NpuContext``). The command line is ``crnn.cli``'s.
"""
