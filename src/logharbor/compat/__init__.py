"""Drop-in surfaces of other log services' SDKs, over LogHarbor's SDK.

``logharbor.compat.lts``: the CTyun LTS Python SDK (``LogClient``, ``Producer``...).
"""
