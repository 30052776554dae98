"""The only room that imports Authlib's server: the protocol side of the product."""
