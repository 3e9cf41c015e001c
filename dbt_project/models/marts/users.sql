-- A view: the mart selects columns of int_users_enriched as they are, and writing a copy of a large
-- school's rows into the warehouse at every build cost more than reading the view.
{{ config(materialized='view') }}

with

users as (

    select * from {{ ref('int_users_enriched') }}

),

final as (

    select
        external_id,
        email,
        user_id,
        user_login,
        first_name,
        last_name,
        user_type,
        graduation_year,
        is_email_opt_out,
        is_delete_requested,
        line_number

    from users

)

select * from final
