"""Access: who is calling and what they may do.

Tenants, plans, keys and principals (``identity``, ``keys``), authentication and the OAuth2
client-credentials grant (``authentication``, ``oauth``), authorization policy
(``authorization``), tenant and key management (``tenancy``), the audit trail (``audit``) and
the ports (``ports``). The bottom of the core's layers: it imports no other context.
"""
