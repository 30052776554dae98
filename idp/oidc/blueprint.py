from flask import Blueprint

bp = Blueprint("oidc", __name__)
